"""The importer (node/importer.py) on this machine, with a stand-in for enroot, and what the server makes of its
lines (containers/image_import_progress.py); the cluster tests run it for real (test_image_import_steps.py).

Every fixture is enroot 4.1.2's real output, captured on the test cluster's gpu01 against its registry (token
authentication, as nvcr.io's), with the tiny test image: TINY_IMPORT, CACHE_FULL and TEMP_FULL are what `enroot
import` wrote on its terminal (a pseudo-terminal set up as the importer sets it, TERM=xterm-256color: coloured
log lines; GNU parallel's bar frames that repeat the one before left out), the captured(...) ones the importer's
stdout and srun's stderr of real imports (and one digest lookup) that failed as their names say.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jupyter_asgard.containers.container_steps import (
    IMPORT_STEP_NAME,
    IMPORTER_SOURCE,
    digest_step_argv,
    import_step_argv,
)
from jupyter_asgard.containers.image_import_progress import (
    MAX_LOG_LINES,
    ImportProgress,
    cache_file_name,
    import_failure,
    valid_uri_problem,
)
from jupyter_asgard.containers.images import parse_image_uri
from jupyter_asgard.node import importer
from jupyter_asgard.node.importer import PHASES, PREFIX, Reader, end_session, event, parse_event, session_members

URI = "docker://10.213.1.1:16815#asgard/tiny:1.0"  # the tiny test image, where the fixtures were captured
DIGEST_VALUE = "sha256:e593e9ba85ae8f474d441b6fd6b98cee24cb2e7624fef4cf9c3b3f05d523cfec"


def captured(text: str) -> list[str]:
    return text.splitlines()


TINY_IMPORT = (
    b"\x1b[94m[INFO]\x1b(B\x1b[m Querying registry for permission grant\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Authenticating with user: asgard-tester\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Using credentials from file: /tmp/imp-exp/cfg/.credentials\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Authentication succeeded\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Fetching image manifest list\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Fetching image manifest\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Downloading 3 missing layers...\n"
    b"\n"
    b"sh: 1: cannot open /dev/tty: No such device or address\n"
    b"sh: 1: cannot open /dev/tty: No such device or address\n"
    b"\r"
    b"\r#   0 sec bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      "
    b"\r0"
    b"\r\x1b[7m\x1b[0m0% 0:3=0s bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      \x1b[0m"
    b"\r"
    b"\r#   0 sec bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      "
    b"\r33.3333333333333"
    b"\r\x1b[7m33% 1:2=0s bd70b5d4b735256\x1b[0m7e89a693cffdcab599314fec6c9b79061981cbcb2955a5441     \x1b[0m"
    b"\r"
    b"\r#   0 sec bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      "
    b"\r66.6666666666667"
    b"\r\x1b[7m66% 2:1=0s bd70b5d4b7352567e89a693cffdcab599314fec6c9\x1b[0mb79061981cbcb2955a5441     \x1b[0m"
    b"\r"
    b"\r#   0 sec bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      "
    b"\r100"
    b"\r\x1b[7m100% 3:0=0s bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441    \x1b[0m\x1b[0m"
    b"\r"
    b"\r#   0 sec bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      "
    b"\r100"
    b"\r\x1b[7m100% 3:0=0s bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441    \x1b[0m\x1b[0m\n"
    b"\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Extracting image layers...\n"
    b"\n"
    b"sh: 1: cannot open /dev/tty: No such device or address\n"
    b"sh: 1: cannot open /dev/tty: No such device or address\n"
    b"\r"
    b"\r#   0 sec bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      "
    b"\r0"
    b"\r\x1b[7m\x1b[0m0% 0:3=0s bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      \x1b[0m"
    b"\r"
    b"\r#   0 sec bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      "
    b"\r33.3333333333333"
    b"\r\x1b[7m33% 1:2=0s bd70b5d4b735256\x1b[0m7e89a693cffdcab599314fec6c9b79061981cbcb2955a5441     \x1b[0m"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r66.6666666666667"
    b"\r\x1b[7m66% 2:1=0s e959001653dceacd7bf164a37b48662ba793b838a3\x1b[0m57cf384d558cd0eea74477     \x1b[0m"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r100"
    b"\r\x1b[7m100% 3:0=0s e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477    \x1b[0m\x1b[0m"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r100"
    b"\r\x1b[7m100% 3:0=0s e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477    \x1b[0m\x1b[0m\n"
    b"\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Converting whiteouts...\n"
    b"\n"
    b"sh: 1: cannot open /dev/tty: No such device or address\n"
    b"sh: 1: cannot open /dev/tty: No such device or address\n"
    b"\r"
    b"\r#   0 sec bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      "
    b"\r33.3333333333333"
    b"\r\x1b[7m33% 1:2=0s bd70b5d4b735256\x1b[0m7e89a693cffdcab599314fec6c9b79061981cbcb2955a5441     \x1b[0m"
    b"\r"
    b"\r#   0 sec bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      "
    b"\r66.6666666666667"
    b"\r\x1b[7m66% 2:1=0s bd70b5d4b7352567e89a693cffdcab599314fec6c9\x1b[0mb79061981cbcb2955a5441     \x1b[0m"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r66.6666666666667"
    b"\r\x1b[7m66% 2:1=0s e959001653dceacd7bf164a37b48662ba793b838a3\x1b[0m57cf384d558cd0eea74477     \x1b[0m"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r100"
    b"\r\x1b[7m100% 3:0=0s e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477    \x1b[0m\x1b[0m"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r100"
    b"\r\x1b[7m100% 3:0=0s e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477    \x1b[0m\x1b[0m\n"
    b"\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Creating squashfs filesystem...\n"
    b"\n"
    b"Parallel mksquashfs: Using 2 processors\n"
    b"Creating 4.0 filesystem on /tmp/imp-exp/tiny3.sqsh, block size 131072.\n"
    b"\r[=================================================================|] 13/13 100%\n"
    b"\n"
    b"Exportable Squashfs 4.0 filesystem, lzo compressed, data block size 131072\n"
    b"\tuncompressed data, compressed metadata, compressed fragments,\n"
    b"\tcompressed xattrs, compressed ids\n"
    b"\tduplicates are removed\n"
    b"Filesystem size 1024.83 Kbytes (1.00 Mbytes)\n"
    b"\t99.96% of uncompressed filesystem size (1025.24 Kbytes)\n"
    b"Inode table size 159 bytes (0.16 Kbytes)\n"
    b"\t41.19% of uncompressed inode table size (386 bytes)\n"
    b"Directory table size 153 bytes (0.15 Kbytes)\n"
    b"\t78.87% of uncompressed directory table size (194 bytes)\n"
    b"Number of duplicate files found 1\n"
    b"Number of inodes 11\n"
    b"Number of files 7\n"
    b"Number of fragments 1\n"
    b"Number of symbolic links 0\n"
    b"Number of device nodes 0\n"
    b"Number of fifo nodes 0\n"
    b"Number of socket nodes 0\n"
    b"Number of directories 4\n"
    b"Number of hard-links 0\n"
    b"Number of ids (unique uids + gids) 1\n"
    b"Number of uids 1\n"
    b"\troot (0)\n"
    b"Number of gids 1\n"
    b"\troot (0)\n"
)

CACHE_FULL = (
    b"\x1b[94m[INFO]\x1b(B\x1b[m Querying registry for permission grant\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Authenticating with user: asgard-tester\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Using credentials from file: /tmp/imp-exp/cfg/.credentials\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Authentication succeeded\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Fetching image manifest list\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Fetching image manifest\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Downloading 1 missing layers...\n"
    b"\n"
    b"sh: 1: cannot open /dev/tty: No such device or address\n"
    b"sh: 1: cannot open /dev/tty: No such device or address\n"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r0"
    b"\r\x1b[7m\x1b[0m0% 0:1=0s e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      \x1b[0m"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r0"
    b"\r\x1b[7m\x1b[0m0% 0:1=0s e959001653dceacd7bf164a37b48662ba793b838a357cf384d5"
    b"58cd0eea74477      \x1b[0mzstd: error 70 : Write error : cannot write block : No space left on device \n"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r100"
    b"\r\x1b[7m100% 1:0=0s e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477    \x1b[0m\x1b[0m"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r100"
    b"\r\x1b[7m100% 1:0=0s e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477    \x1b[0m\x1b[0m\n"
)

TEMP_FULL = (
    b"\x1b[94m[INFO]\x1b(B\x1b[m Querying registry for permission grant\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Authenticating with user: asgard-tester\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Using credentials from file: /tmp/imp-exp/cfg/.credentials\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Authentication succeeded\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Fetching image manifest list\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Fetching image manifest\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Found all layers in cache\n"
    b"\x1b[94m[INFO]\x1b(B\x1b[m Extracting image layers...\n"
    b"\n"
    b"sh: 1: cannot open /dev/tty: No such device or address\n"
    b"sh: 1: cannot open /dev/tty: No such device or address\n"
    b"\r"
    b"\r#   0 sec bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      "
    b"\r0"
    b"\r\x1b[7m\x1b[0m0% 0:3=0s bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      \x1b[0m"
    b"\r"
    b"\r#   0 sec bd70b5d4b7352567e89a693cffdcab599314fec6c9b79061981cbcb2955a5441      "
    b"\r33.3333333333333"
    b"\r\x1b[7m33% 1:2=0s bd70b5d4b735256\x1b[0m7e89a693cffdcab599314fec6c9b79061981cbcb2955a5441     \x1b[0m"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r66.6666666666667"
    b"\r\x1b[7m66% 2:1=0s e959001653dceacd7bf164a37b48662ba793b838a3\x1b[0m57cf384d558cd0eea74477     \x1b[0m"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r66.6666666666667"
    b"\r\x1b[7m66% 2:1=0s e959001653dceacd7bf164a37b48662ba793b838a3\x1b[0m57cf384d"
    b"558cd0eea74477     \x1b[0mtar: data/noise.bin: Wrote only 9216 of 10240 bytes\n"
    b"tar: data/obsolete.txt: Cannot write: No space left on device\n"
    b"tar: etc/os-release: Cannot write: No space left on device\n"
    b"tar: Exiting with failure status due to previous errors\n"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r100"
    b"\r\x1b[7m100% 3:0=0s e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477    \x1b[0m\x1b[0m"
    b"\r"
    b"\r#   0 sec e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477      "
    b"\r100"
    b"\r\x1b[7m100% 3:0=0s e959001653dceacd7bf164a37b48662ba793b838a357cf384d558cd0eea74477    \x1b[0m\x1b[0m\n"
)

WRONG_PASSWORD = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log [INFO] Authenticating with user: asgard-tester
asgard-import log [INFO] Using credentials from file: /tmp/imp-exp/badcfg/.credentials
asgard-import log [ERROR] URL http://10.213.1.1:16816/token returned error code: 401 Unauthorized
asgard-import path config /tmp/imp-exp/badcfg
asgard-import path cache /tmp/imp-cluster/nodes/gpu01/enroot/cache/user-0
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 1
"""
)

NO_CREDENTIALS = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log [INFO] Authenticating with user: <anonymous>
asgard-import log [ERROR] URL http://10.213.1.1:16816/token returned error code: 401 Unauthorized
asgard-import path config /tmp/imp-exp/emptycfg
asgard-import path cache /tmp/imp-cluster/nodes/gpu01/enroot/cache/user-0
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 1
"""
)

NO_PASSWORD_FOR_USER = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log [INFO] Authenticating with user: nobody
asgard-import log Enter host password for user 'nobody':
asgard-import log [ERROR] URL http://10.213.1.1:16816/token returned error code: 401 Unauthorized
asgard-import path config /tmp/imp-exp/cfg
asgard-import path cache /tmp/imp-cluster/nodes/gpu01/enroot/cache/user-0
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 1
"""
)

UNKNOWN_TAG = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log [INFO] Authenticating with user: asgard-tester
asgard-import log [INFO] Using credentials from file: /tmp/imp-exp/cfg/.credentials
asgard-import log [INFO] Authentication succeeded
asgard-import phase manifest
asgard-import log [INFO] Fetching image manifest list
asgard-import log [INFO] Fetching image manifest
asgard-import log [ERROR] URL http://10.213.1.1:16815/v2/asgard/tiny/manifests/no-such-tag returned error code: 404 Not Found
asgard-import path config /tmp/imp-exp/cfg
asgard-import path cache /tmp/imp-cluster/nodes/gpu01/enroot/cache/user-0
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 1
"""  # noqa: E501 (enroot's line, as it wrote it)
)

UNKNOWN_REPOSITORY = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log [INFO] Authenticating with user: asgard-tester
asgard-import log [INFO] Using credentials from file: /tmp/imp-exp/cfg/.credentials
asgard-import log [INFO] Authentication succeeded
asgard-import phase manifest
asgard-import log [INFO] Fetching image manifest list
asgard-import log [INFO] Fetching image manifest
asgard-import log [ERROR] URL http://10.213.1.1:16815/v2/no/such-repository/manifests/1.0 returned error code: 404 Not Found
asgard-import path config /tmp/imp-exp/cfg
asgard-import path cache /tmp/imp-cluster/nodes/gpu01/enroot/cache/user-0
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 1
"""  # noqa: E501 (enroot's line, as it wrote it)
)

UNKNOWN_HOST = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log curl: (6) Could not resolve host: registry.invalid
asgard-import path config /tmp/imp-exp/cfg
asgard-import path cache /tmp/imp-cluster/nodes/gpu01/enroot/cache/user-0
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 6
"""
)

REGISTRY_DOWN = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log curl: (7) Failed to connect to 10.213.1.1 port 16815 after 0 ms: Couldn't connect to server
asgard-import path config /tmp/imp-exp/cfg
asgard-import path cache /tmp/imp-cluster/nodes/gpu01/enroot/cache/user-0
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 7
"""
)

REGISTRY_TIMEOUT = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log curl: (28) Failed to connect to 10.213.1.99 port 5000 after 1001 ms: Timeout was reached
asgard-import path config /tmp/imp-exp/cfg
asgard-import path cache /tmp/imp-cluster/nodes/gpu01/enroot/cache/user-0
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 28
"""
)

INVALID_REFERENCE = captured(
    """\
asgard-import log [ERROR] Invalid image reference: docker://10.213.1.1:16815#Asgard/Tiny:1.0
asgard-import path config /tmp/imp-exp/cfg
asgard-import path cache /tmp/imp-cluster/nodes/gpu01/enroot/cache/user-0
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 1
"""
)

OUTPUT_EXISTS = captured(
    """\
asgard-import log [ERROR] File already exists: /tmp/imp-exp/tiny2.sqsh
asgard-import path config /tmp/imp-exp/cfg
asgard-import path cache /tmp/imp-cluster/nodes/gpu01/enroot/cache/user-0
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 1
"""
)

IMAGE_DIRECTORY_FULL = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log [INFO] Authenticating with user: asgard-tester
asgard-import log [INFO] Using credentials from file: /tmp/imp-exp/cfg/.credentials
asgard-import log [INFO] Authentication succeeded
asgard-import phase manifest
asgard-import log [INFO] Fetching image manifest list
asgard-import log [INFO] Fetching image manifest
asgard-import phase downloading
asgard-import layers 0 3
asgard-import log [INFO] Downloading 3 missing layers...
asgard-import layers 1 3
asgard-import layers 2 3
asgard-import layers 3 3
asgard-import phase extracting
asgard-import log [INFO] Extracting image layers...
asgard-import phase converting
asgard-import log [INFO] Converting whiteouts...
asgard-import phase squashfs
asgard-import log [INFO] Creating squashfs filesystem...
asgard-import log Parallel mksquashfs: Using 2 processors
asgard-import log Creating 4.0 filesystem on /tmp/imp-exp/full-out/y.sqsh, block size 131072.
asgard-import log Write failed because No space left on device
asgard-import log FATAL ERROR: Failed to write to output filesystem
asgard-import path config /tmp/imp-exp/cfg
asgard-import path cache /tmp/imp-exp/cache3
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 1
"""
)

CACHE_DIRECTORY_FULL = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log [INFO] Authenticating with user: asgard-tester
asgard-import log [INFO] Using credentials from file: /tmp/imp-exp/cfg/.credentials
asgard-import log [INFO] Authentication succeeded
asgard-import phase manifest
asgard-import log [INFO] Fetching image manifest list
asgard-import log [INFO] Fetching image manifest
asgard-import phase downloading
asgard-import layers 0 3
asgard-import log [INFO] Downloading 3 missing layers...
asgard-import layers 1 3
asgard-import layers 2 3
asgard-import log zstd: error 70 : Write error : cannot write block : No space left on device
asgard-import layers 3 3
asgard-import path config /tmp/imp-exp/cfg
asgard-import path cache /tmp/imp-exp/full-cache
asgard-import path temp /tmp
srun: error: gpu01: task 0: Exited with exit code 1
"""
)

TEMP_DIRECTORY_FULL = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log [INFO] Authenticating with user: asgard-tester
asgard-import log [INFO] Using credentials from file: /tmp/imp-exp/cfg/.credentials
asgard-import log [INFO] Authentication succeeded
asgard-import phase manifest
asgard-import log [INFO] Fetching image manifest list
asgard-import log [INFO] Fetching image manifest
asgard-import phase downloading
asgard-import log [INFO] Found all layers in cache
asgard-import phase extracting
asgard-import log [INFO] Extracting image layers...
asgard-import log tar: data/noise.bin: Wrote only 9216 of 10240 bytes
asgard-import log tar: data/obsolete.txt: Cannot write: No space left on device
asgard-import log tar: etc/os-release: Cannot write: No space left on device
asgard-import log tar: Exiting with failure status due to previous errors
asgard-import path config /tmp/imp-exp/cfg
asgard-import path cache /tmp/imp-exp/cache3
asgard-import path temp /tmp/imp-exp/full-temp
srun: error: gpu01: task 0: Exited with exit code 1
"""
)

NO_ENROOT = captured(
    """\
asgard-import log enroot is not installed on this node (enroot: No such file or directory)
srun: error: gpu01: task 0: Exited with exit code 127
"""
)

DIGEST = captured(
    """\
asgard-import phase authenticating
asgard-import log [INFO] Querying registry for permission grant
asgard-import log [INFO] Authenticating with user: asgard-tester
asgard-import log [INFO] Using credentials from file: /tmp/imp-exp/cfg/.credentials
asgard-import log [INFO] Authentication succeeded
asgard-import digest sha256:e593e9ba85ae8f474d441b6fd6b98cee24cb2e7624fef4cf9c3b3f05d523cfec
"""
)


# --- the importer, with a stand-in for enroot ---------------------------------------------------------------

# What `enroot info` prints (its format, shortened), for the directories a failure names.
ENROOT_INFO = """\
Enroot version: 4.1.2
Config file: /usr/local/etc/enroot/enroot.conf

Environment variables:
  ENROOT_CACHE_PATH=/var/lib/enroot/cache/user-1000
  ENROOT_CONFIG_PATH=/home/ada/.config/enroot
  ENROOT_TEMP_PATH=/tmp
"""


@pytest.fixture
def fake_enroot(tmp_path: Path) -> Callable[..., Path]:
    """fake_enroot(stderr, stdout, status, script): the directory of an `enroot` for the importer's PATH that
    writes stderr (on its terminal) and stdout, records its arguments in ARGV and exits with status; or runs
    script (bash, its directory in $BIN). Its `enroot info` prints ENROOT_INFO; its `enroot digest` prints
    import_digest where one is given (an import looks the digest up first)."""
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "info").write_text(ENROOT_INFO)

    def make(
        stderr: bytes = b"", stdout: bytes = b"", status: int = 0, script: str = "", import_digest: str = DIGEST_VALUE
    ) -> Path:
        (directory / "stderr").write_bytes(stderr)
        (directory / "stdout").write_bytes(stdout)
        body = script or f'printf "%s\\n" "$@" > "$BIN/ARGV"; cat "$BIN/stderr" >&2; cat "$BIN/stdout"; exit {status}'
        enroot = directory / "enroot"
        enroot.write_text(
            f'#!/bin/bash\nBIN="{directory}"\nif [ "$1" = info ]; then cat "$BIN/info"; exit 0; fi\n'
            f'if [ "$1" = digest ] && [ -n "{import_digest}" ]; then echo "{import_digest}"; exit 0; fi\n{body}\n'
        )
        enroot.chmod(0o755)
        return directory

    return make


def importer_env(bin_dir: Path) -> dict[str, str]:
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8"}


def run_importer(bin_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """The importer as the server ships it: its source, run by python3 -I -S -c."""
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", IMPORTER_SOURCE, *arguments],
        capture_output=True,
        text=True,
        env=importer_env(bin_dir),
        timeout=60,
    )


def events(stdout: str, kind: str) -> list[str]:
    """The fields of the importer's lines of kind, each joined by spaces."""
    return [" ".join(parsed[1]) for line in stdout.splitlines() if (parsed := parse_event(line)) and parsed[0] == kind]


def test_an_import_reports_its_phases_its_layers_and_enroots_lines_from_its_terminal(
    fake_enroot: Callable[..., Path], tmp_path: Path
) -> None:
    """What the importer made of enroot's real import of the tiny image (three layers): the phases in order,
    the layers as GNU parallel's bar counted them, enroot's lines without colours, bar redraws or the shell's
    complaint that parallel finds no terminal, and enroot's exit status."""
    bin_dir = fake_enroot(stderr=TINY_IMPORT)
    out = str(tmp_path / "images" / "tiny.sqsh")

    result = run_importer(bin_dir, "import", out, URI)

    assert (result.returncode, result.stderr) == (0, "")
    assert (bin_dir / "ARGV").read_text().splitlines() == ["import", "-o", out, "--", f"{URI}@{DIGEST_VALUE}"]
    assert all(line.startswith(PREFIX + " ") for line in result.stdout.splitlines()), result.stdout
    assert events(result.stdout, "phase") == list(PHASES)
    assert events(result.stdout, "layers") == ["0 3", "1 3", "2 3", "3 3"]
    assert events(result.stdout, "percent") == ["100"]
    log = events(result.stdout, "log")
    assert log[:8] == [
        "[INFO] Querying registry for permission grant",
        "[INFO] Authenticating with user: asgard-tester",
        "[INFO] Using credentials from file: /tmp/imp-exp/cfg/.credentials",
        "[INFO] Authentication succeeded",
        "[INFO] Fetching image manifest list",
        "[INFO] Fetching image manifest",
        "[INFO] Downloading 3 missing layers...",
        "[INFO] Extracting image layers...",
    ]
    assert "Creating 4.0 filesystem on /tmp/imp-exp/tiny3.sqsh, block size 131072." in log
    assert "Filesystem size 1024.83 Kbytes (1.00 Mbytes)" in log
    for line in log:
        assert not any(noise in line for noise in ("\x1b", "\r", "/dev/tty", "0:3=", "# ", "13/13")), line
    # The phases come before the line that starts them, a layer count right after the line that gives it.
    lines = result.stdout.splitlines()
    assert (
        lines.index(event("layers", "0", "3"))
        == lines.index(event("log", "[INFO] Downloading 3 missing layers...")) - 1
    )
    assert lines.index(event("phase", "squashfs")) < lines.index(event("percent", "100"))
    assert not events(result.stdout, "path")  # only after a failure


def test_what_a_status_bar_shows_follows_the_import() -> None:
    progress, shown = ImportProgress(), []
    for line in importer_lines(TINY_IMPORT):
        if progress.feed(line):
            shown.append(progress.describe())
    assert shown == [
        "authenticating with the registry",
        "fetching the image manifest",
        "downloading layers",
        "downloading layers 0 of 3",
        "downloading layers 1 of 3",
        "downloading layers 2 of 3",
        "downloading layers 3 of 3",
        "extracting layers",
        "converting whiteouts",
        "creating the squashfs image",
        "creating the squashfs image (100%)",
    ]
    assert (progress.phase, progress.layers_done, progress.layers_total, progress.percent) == ("squashfs", 3, 3, 100)
    assert progress.log[0] == "[INFO] Querying registry for permission grant"
    assert progress.to_json() | {"log": []} == {
        "phase": "squashfs",
        "description": "creating the squashfs image (100%)",
        "layers_done": 3,
        "layers_total": 3,
        "percent": 100,
        "digest": "",
        "log": [],
    }


def importer_lines(terminal: bytes, chunk: int = 0) -> list[str]:
    """The importer's lines for what enroot wrote on its terminal, read chunk bytes at a time (0: at once)."""
    lines: list[str] = []
    reader = Reader(lambda *fields: lines.append(event(*fields)))
    for start in range(0, len(terminal), chunk or len(terminal)):
        reader.terminal(terminal[start : start + (chunk or len(terminal))])
    reader.finish()
    return lines


@pytest.mark.parametrize("chunk", [1, 7, 80, 1000])
def test_reads_of_any_size_make_the_same_lines(chunk: int) -> None:
    assert importer_lines(TINY_IMPORT, chunk) == importer_lines(TINY_IMPORT)


def test_a_line_written_right_after_a_bar_is_a_line_of_its_own() -> None:
    """zstd and tar write their complaints while parallel's bar is on the line, with no break before them."""
    cache = events("\n".join(importer_lines(CACHE_FULL)), "log")
    assert cache[-1] == "zstd: error 70 : Write error : cannot write block : No space left on device"
    temp = events("\n".join(importer_lines(TEMP_FULL)), "log")
    assert temp[-4:] == [
        "tar: data/noise.bin: Wrote only 9216 of 10240 bytes",
        "tar: data/obsolete.txt: Cannot write: No space left on device",
        "tar: etc/os-release: Cannot write: No space left on device",
        "tar: Exiting with failure status due to previous errors",
    ]


def test_mksquashfs_progress_is_reported_in_whole_percent() -> None:
    """mksquashfs's bar, as it drew it importing the debootstrap test image (80 columns)."""
    frames = b"[INFO] Creating squashfs filesystem...\n\n" + b"".join(
        b"\r[" + b"=" * (done * 70 // 4908) + b"/" + b" " * (70 - done * 70 // 4908) + b"] %4d/4908 %3d%%" % (done, pct)
        for done, pct in ((136, 2), (182, 3), (182, 3), (4908, 100))
    )
    assert events("\n".join(importer_lines(frames)), "percent") == ["2", "3", "100"]


def test_a_failed_import_exits_as_enroot_did_and_names_enroots_directories(
    fake_enroot: Callable[..., Path], tmp_path: Path
) -> None:
    stderr = b"[ERROR] File already exists: /home/ada/images/tiny.sqsh\n"
    result = run_importer(fake_enroot(stderr=stderr, status=1), "import", "/home/ada/images/tiny.sqsh", URI)
    assert result.returncode == 1
    assert events(result.stdout, "log") == ["[ERROR] File already exists: /home/ada/images/tiny.sqsh"]
    assert events(result.stdout, "path") == [
        "config /home/ada/.config/enroot",
        "cache /var/lib/enroot/cache/user-1000",
        "temp /tmp",
    ]


def test_an_enroot_killed_by_a_signal_is_128_plus_it(fake_enroot: Callable[..., Path]) -> None:
    assert run_importer(fake_enroot(script="kill -KILL $$"), "import", "/tmp/x.sqsh", URI).returncode == 128 + 9


def test_a_digest_is_reported_from_enroots_stdout(fake_enroot: Callable[..., Path]) -> None:
    terminal = b"".join(line.encode() + b"\n" for line in events("\n".join(DIGEST), "log"))
    bin_dir = fake_enroot(stderr=terminal, stdout=DIGEST_VALUE.encode() + b"\n", import_digest="")
    result = run_importer(bin_dir, "digest", URI)
    assert result.returncode == 0
    assert (bin_dir / "ARGV").read_text().splitlines() == ["digest", "--", URI]
    assert events(result.stdout, "digest") == [DIGEST_VALUE]
    assert events(result.stdout, "phase") == ["authenticating"]
    progress = ImportProgress()
    assert [progress.feed(line) for line in DIGEST][-1] is True
    assert progress.digest == DIGEST_VALUE
    assert progress.describe() == "authenticating with the registry"  # an import goes on from there


def test_a_node_without_enroot_says_so(tmp_path: Path) -> None:
    result = run_importer(tmp_path, "digest", URI)  # tmp_path: no enroot in it
    assert result.returncode == 127
    assert events(result.stdout, "log") == [f"{importer.NO_ENROOT} (enroot: No such file or directory)"]


@pytest.mark.parametrize("arguments", [[], ["import", "/tmp/x.sqsh"], ["digest"], ["export", "x", "y"]])
def test_other_arguments_are_a_usage_error(tmp_path: Path, arguments: list[str]) -> None:
    result = run_importer(tmp_path, *arguments)
    assert result.returncode == 2 and "usage" in result.stderr and not result.stdout


# enroot's part in a cancelled import: a cleanup on exit (its temporary directory), and jobs that GNU parallel
# runs in process groups of their own (set -m here); the test reads their pids. Then it waits, or writes on.
LONG_IMPORT = """\
trap 'echo removed > "$BIN/cleaned-up"' EXIT
set -m
sleep 300 &
echo $! >> "$BIN/pids"
bash -c 'sleep 300' &
echo $! >> "$BIN/pids"
echo $$ >> "$BIN/pids"
echo "[INFO] Querying registry for permission grant" >&2
"""
WAITS = "wait"
WRITES_ON = 'while :; do echo "[INFO] Fetching image manifest" >&2; sleep 0.05; done'


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def start_long_import(bin_dir: Path) -> tuple[subprocess.Popen[str], list[int]]:
    """The importer running enroot (bin_dir's), once enroot and its jobs run and the first line is read."""
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", IMPORTER_SOURCE, "import", "/tmp/never.sqsh", URI],
        stdout=subprocess.PIPE,
        text=True,
        env=importer_env(bin_dir),
    )
    assert process.stdout is not None
    assert process.stdout.readline() == event("job", "-", "-") + "\n"  # not in a Slurm job here
    assert process.stdout.readline() == event("digest", DIGEST_VALUE) + "\n"  # looked up first
    assert process.stdout.readline() == event("phase", "authenticating") + "\n"  # flushed at once
    pids_file = bin_dir / "pids"
    assert wait_for(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 3)
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert all(alive(pid) for pid in pids)
    return process, pids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_cancelled_import_ends_enroot_and_everything_it_started(
    fake_enroot: Callable[..., Path], sig: signal.Signals
) -> None:
    """scancel's SIGTERM (or a SIGINT) to the importer: enroot gets SIGTERM first, so that it cleans up, then
    nothing of its session is left, not even the jobs in process groups of their own."""
    bin_dir = fake_enroot(script=LONG_IMPORT + WAITS)
    process, pids = start_long_import(bin_dir)

    process.send_signal(sig)

    assert process.wait(timeout=30) == 128 + sig
    assert not [pid for pid in pids if alive(pid)]
    assert (bin_dir / "cleaned-up").read_text() == "removed\n"


def test_an_import_nobody_reads_any_more_ends_enroot(fake_enroot: Callable[..., Path]) -> None:
    """srun gone (the server's side of the step): the next line the importer writes fails, and it ends enroot."""
    bin_dir = fake_enroot(script=LONG_IMPORT + WRITES_ON)
    process, pids = start_long_import(bin_dir)
    assert process.stdout is not None

    process.stdout.close()

    assert process.wait(timeout=30) == 128 + signal.SIGPIPE
    assert not [pid for pid in pids if alive(pid)]


def test_what_ignores_sigterm_is_killed_after_the_grace() -> None:
    child = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"], start_new_session=True)
    assert wait_for(lambda: len(session_members(child.pid)) == 3)
    started = time.monotonic()

    end_session(child, grace=0.5)

    assert session_members(child.pid) == [] and child.returncode == -signal.SIGKILL
    assert time.monotonic() - started >= 0.5  # the grace was given (how long past it is for no test to time)


# --- what the server makes of the lines --------------------------------------------------------------------


def test_the_lines_are_written_and_read_with_the_same_definitions() -> None:
    assert event("phase", "manifest") == "asgard-import phase manifest"
    assert parse_event("asgard-import layers 2 5\n") == ("layers", ["2", "5"])
    assert parse_event("asgard-import log  two  spaces kept ") == ("log", [" two  spaces kept "])
    assert parse_event("asgard-import path temp /scratch/my tmp") == ("path", ["temp", "/scratch/my tmp"])
    assert parse_event("srun: error: gpu01: task 0: Exited with exit code 1") is None
    assert parse_event("asgard-importer phase manifest") is None


def test_feed_says_when_the_status_changed() -> None:
    progress = ImportProgress()
    assert progress.feed("asgard-import phase manifest") is True
    assert progress.feed("asgard-import phase manifest") is False
    assert progress.feed("asgard-import log [INFO] Fetching image manifest") is False
    assert progress.feed("asgard-import phase downloading") is True
    assert progress.feed("asgard-import layers 0 2") is True
    assert progress.feed("asgard-import layers 0 2") is False
    assert progress.describe() == "downloading layers 0 of 2"
    for nonsense in ("asgard-import phase uploading", "asgard-import layers two 2", "asgard-import digest md5:00"):
        assert progress.feed(nonsense) is False
    assert progress.feed("a line that is not the importer's") is False
    assert progress.log == ["[INFO] Fetching image manifest", "a line that is not the importer's"]
    assert progress.feed("asgard-import phase squashfs") is True
    assert progress.describe() == "creating the squashfs image"
    assert (
        progress.feed("asgard-import percent 40") is True and progress.describe() == "creating the squashfs image (40%)"
    )


def test_the_log_keeps_enroots_last_lines() -> None:
    progress = ImportProgress()
    for number in range(MAX_LOG_LINES + 50):
        progress.feed(event("log", f"tar: file{number}: Cannot write: No space left on device"))
    assert len(progress.log) == MAX_LOG_LINES and progress.log[-1].startswith(f"tar: file{MAX_LOG_LINES + 49}:")


CREDENTIALS_RULE = (
    "(the registry's host, without its port) from $ENROOT_CONFIG_PATH/.credentials on the compute node (by default "
    "~/.config/enroot/.credentials"
)


@pytest.mark.parametrize(
    ("lines", "uri", "message", "hint"),
    [
        (
            WRONG_PASSWORD,
            URI,
            "the registry 10.213.1.1:16815 refused the credentials of asgard-tester from "
            "/tmp/imp-exp/badcfg/.credentials (HTTP 401 Unauthorized)",
            ["check the password", "`machine 10.213.1.1 login asgard-tester password PASSWORD`", CREDENTIALS_RULE],
        ),
        (
            NO_CREDENTIALS,
            URI,
            "the registry 10.213.1.1:16815 asks for credentials, and enroot has none for it (HTTP 401 Unauthorized)",
            [
                "`machine 10.213.1.1 login USER password PASSWORD`",
                CREDENTIALS_RULE,
                "/tmp/imp-exp/emptycfg/.credentials",
            ],
        ),
        (
            NO_PASSWORD_FOR_USER,
            "docker://nobody@10.213.1.1:16815#asgard/tiny:1.0",
            "enroot has no password for nobody at the registry 10.213.1.1:16815 (HTTP 401 Unauthorized)",
            ["`machine 10.213.1.1 login nobody password PASSWORD`", CREDENTIALS_RULE],
        ),
        (
            UNKNOWN_TAG,
            "docker://10.213.1.1:16815#asgard/tiny:no-such-tag",
            "the registry 10.213.1.1:16815 has no image asgard/tiny:no-such-tag (HTTP 404 Not Found): the repository "
            "or the tag does not exist",
            ["check the image's name and tag"],
        ),
        (
            UNKNOWN_REPOSITORY,
            "docker://10.213.1.1:16815#no/such-repository:1.0",
            "the registry 10.213.1.1:16815 has no image no/such-repository:1.0 (HTTP 404 Not Found): the repository "
            "or the tag does not exist",
            ["check the image's name and tag"],
        ),
        (
            UNKNOWN_HOST,
            "docker://registry.invalid#asgard/tiny:1.0",
            "the compute node cannot find the registry registry.invalid: no such host name",
            ["check the registry's name"],
        ),
        (
            REGISTRY_DOWN,
            URI,
            "the compute node cannot reach the registry at 10.213.1.1 port 16815: Couldn't connect to server",
            ["is it up?"],
        ),
        (
            REGISTRY_TIMEOUT,
            "docker://10.213.1.99:5000#asgard/tiny:1.0",
            "the registry at 10.213.1.99 port 5000 did not answer in time",
            ["try again later"],
        ),
        (
            INVALID_REFERENCE,
            "docker://10.213.1.1:16815#Asgard/Tiny:1.0",
            "enroot does not accept the image reference docker://10.213.1.1:16815#Asgard/Tiny:1.0",
            ["docker://[USER@][REGISTRY#]IMAGE[:TAG]", "lowercase"],
        ),
        (
            OUTPUT_EXISTS,
            URI,
            "/tmp/imp-exp/tiny2.sqsh exists already, and enroot never replaces a file",
            ["another name"],
        ),
        (
            IMAGE_DIRECTORY_FULL,
            URI,
            "no space is left in /tmp/imp-exp/full-out, where the image is written: the squashfs image did not fit",
            ["make room there"],
        ),
        (
            CACHE_DIRECTORY_FULL,
            URI,
            "no space is left in enroot's cache on the compute node (/tmp/imp-exp/full-cache), where it keeps the "
            "downloaded layers: they did not fit",
            ["ENROOT_CACHE_PATH"],
        ),
        (
            TEMP_DIRECTORY_FULL,
            URI,
            "no space is left in enroot's temporary directory on the compute node (/tmp/imp-exp/full-temp), where it "
            "unpacks the layers: the unpacked image did not fit",
            ["ENROOT_TEMP_PATH"],
        ),
        (
            NO_ENROOT,
            URI,
            "enroot is not installed on the compute node, so it cannot import images",
            ["administrators"],
        ),
    ],
)
def test_a_failure_is_said_in_the_users_words(lines: list[str], uri: str, message: str, hint: list[str]) -> None:
    found = import_failure(lines, uri)
    assert found[0] == message
    assert all(part in found[1] for part in hint), found[1]


def test_the_words_need_only_enroots_lines() -> None:
    """What a caller keeps of the output (ImportProgress.log: enroot's lines, no phases or directories) still
    tells where the disk is full, and who refused what."""
    for lines, words in (
        (CACHE_DIRECTORY_FULL, "in enroot's cache on the compute node (ENROOT_CACHE_PATH)"),
        (TEMP_DIRECTORY_FULL, "in enroot's temporary directory on the compute node (ENROOT_TEMP_PATH)"),
        (IMAGE_DIRECTORY_FULL, "no space is left in /tmp/imp-exp/full-out, where the image is written"),
        (WRONG_PASSWORD, "refused the credentials of asgard-tester"),
    ):
        progress = ImportProgress()
        for line in lines:
            progress.feed(line)
        assert words in import_failure(progress.log, URI)[0]


def test_what_was_fed_is_enough_to_say_why() -> None:
    """ImportProgress keeps enroot's last lines, the phase and the directories: the same words as from every line."""
    for lines in (WRONG_PASSWORD, UNKNOWN_TAG, REGISTRY_DOWN, IMAGE_DIRECTORY_FULL, CACHE_DIRECTORY_FULL, NO_ENROOT):
        stdout = [line for line in lines if not line.startswith("srun: ")]
        progress = ImportProgress()
        for line in stdout:
            progress.feed(line)
        assert progress.failure(URI, lines[len(stdout) :]) == import_failure(lines, URI)


def test_a_full_quota_is_said_as_such() -> None:
    """The same failures where the quota, not the disk, is full: enroot's lines with strerror(EDQUOT) where
    strerror(ENOSPC) stood (derived from the captured ones: the test cluster has no quotas)."""
    for lines, words in (
        (IMAGE_DIRECTORY_FULL, "your disk quota is exceeded in /tmp/imp-exp/full-out, where the image is written"),
        (CACHE_DIRECTORY_FULL, "your disk quota is exceeded in enroot's cache on the compute node"),
        (TEMP_DIRECTORY_FULL, "your disk quota is exceeded in enroot's temporary directory on the compute node"),
    ):
        quota = [line.replace("No space left on device", "Disk quota exceeded") for line in lines]
        assert words in import_failure(quota, URI)[0]


def test_a_registry_that_refuses_an_image_after_authentication() -> None:
    """Docker Hub's answer for a repository that does not exist or is private: 401 for the manifest itself
    (enroot's words as common::curl prints them for that URL)."""
    lines = [
        *UNKNOWN_TAG[:-5],
        "asgard-import log [ERROR] URL https://registry-1.docker.io/v2/ada/private/manifests"
        "/latest returned error code: 401 Unauthorized",
    ]
    assert import_failure(lines, "docker://ada/private")[0] == (
        "the registry registry-1.docker.io refused ada/private (HTTP 401 Unauthorized): it does not exist, or your "
        "account may not pull it"
    )


def test_anything_else_is_said_with_enroots_last_errors() -> None:
    lines = [*UNKNOWN_TAG[:8], "asgard-import log [ERROR] Could not process JSON input"]
    assert import_failure(lines, URI) == ("the import failed: Could not process JSON input", "")
    no_python = ["slurmstepd-gpu01: error: execve(): python3-nope: No such file or directory"]  # srun's stderr
    assert import_failure(no_python, URI)[0] == "the compute node has no python3-nope to run the import with"
    assert import_failure([], URI) == ("the import failed, and neither enroot nor Slurm said why", "")


@pytest.mark.parametrize(
    "uri",
    [
        "docker://nvcr.io#nvidia/pytorch:24.05-py3",
        "docker://$oauthtoken@nvcr.io#nvidia/pytorch:24.05-py3",
        "docker://nvcr.io/nvidia/pytorch:24.05-py3",
        "docker://ubuntu",
        "docker://ubuntu:22.04",
        "docker://nvidia/cuda:12.2.0-base-ubuntu22.04",
        "docker://10.213.1.1:16815#asgard/tiny:1.0",
        "docker://localhost:5000#team/app__x",
        f"docker://nvcr.io#nvidia/pytorch:24.05-py3@sha256:{'0' * 64}",
        f"docker://ghcr.io/org/tool@sha256:{'a' * 64}",
        "docker://me@example.org@registry.example.org#a/b:c",
    ],
)
def test_references_enroot_imports_are_accepted(uri: str) -> None:
    assert valid_uri_problem(uri) == ""


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("", "name the image to import"),
        ("docker://" + "a" * 1100, "at most 1024"),
        ("docker://ubuntu:22.04 ", "contains ' '"),
        ("docker://ubuntu\n", "contains '\\n'"),
        ("docker://nvcr.io#nvidia/pytorch:1,docker://other", "contains ','"),
        ("docker://ub\x00untu", "contains '\\x00'"),
        ("nvcr.io#nvidia/pytorch:24.05-py3", "docker://nvcr.io#nvidia/pytorch:24.05-py3"),
        ("nvcr.io/nvidia/pytorch:24.05-py3", "docker://nvcr.io/nvidia/pytorch:24.05-py3"),
        ("dockerd://ubuntu", "not dockerd:// images"),
        ("podman://ubuntu", "not podman:// images"),
        ("/enroot/nvidia+pytorch+24.05-py3.sqsh", "is a path"),
        ("docker://", "the image name ''"),
        ("docker://nvcr.io#NVIDIA/PyTorch:24.05-py3", "the image name 'NVIDIA/PyTorch'"),
        ("docker://nvcr.io#nvidia//pytorch", "the image name 'nvidia//pytorch'"),
        ("docker://nvcr.io#nvidia/pytorch:", "the tag ''"),
        ("docker://nvcr.io#nvidia/pytorch:a:b", "the tag 'a:b'"),
        ("docker://nvcr.io#nvidia/pytorch:-x", "the tag '-x'"),
        ("docker://@nvcr.io#nvidia/pytorch", "the user name ''"),
        ("docker://a^b@nvcr.io#nvidia/pytorch", "the user name 'a^b'"),
        ("docker://nvcr_io#nvidia/pytorch", "the registry 'nvcr_io'"),
        ("docker://nvcr.io#nvidia/pytorch@sha256:abc", "the digest 'sha256:abc'"),
        ("docker://a#b#c", "the image name 'b#c'"),
    ],
)
def test_references_enroot_would_refuse_are_refused_first(uri: str, problem: str) -> None:
    assert problem in valid_uri_problem(uri)


def enroot_library() -> Path | None:
    """Where this machine's enroot keeps docker.sh (dev/install builds enroot 4.1.2), if it has one."""
    try:
        info = subprocess.run(["enroot", "info"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    found = [line.split("=", 1)[1] for line in info.splitlines() if line.strip().startswith("ENROOT_LIBRARY_PATH=")]
    return Path(found[0]) if found and (Path(found[0]) / "docker.sh").exists() else None


def test_what_the_server_accepts_enroot_parses_as_the_server_does() -> None:
    """Each reference valid_uri_problem lets through, and many it does not, through enroot's own
    docker::_parse_uri: everything accepted parses, to the registry, image and tag parse_image_uri gives."""
    library = enroot_library()
    if library is None:
        pytest.skip("no enroot with its docker.sh on this machine (./dev/install builds it)")
    users = ["", "$oauthtoken@", "me@x.org@", "a^b@", "@"]
    registries = ["", "reg:5000#", "localhost:5000/", "re_g#"]
    images = ["ubuntu", "nvidia/pytorch", "UPPER", "a__b", "a//b", "a/"]
    tags = ["", ":24.05-py3", ":-x", ":"]
    digests = ["", f"@sha256:{'a' * 64}"]
    uris = [
        f"docker://{user}{registry}{image}{tag}{digest}"
        for user in users
        for registry in registries
        for image in images
        for tag in tags
        for digest in digests
    ]
    script = (
        f'source "{library}/docker.sh" 2>/dev/null; while IFS= read -r uri; do '
        'if out=$(docker::_parse_uri "$uri" 2>/dev/null); then echo "${out//$\'\\n\'/|}"; '
        "else echo INVALID; fi; done"
    )
    env = {"PATH": os.environ["PATH"], "ENROOT_LIBRARY_PATH": str(library), "ENROOT_CONFIG_PATH": "/nonexistent"}
    parsed = subprocess.run(
        ["bash", "-c", script], input="\n".join(uris) + "\n", capture_output=True, text=True, env=env, timeout=300
    ).stdout.splitlines()
    assert len(parsed) == len(uris)
    accepted = [(uri, enroot) for uri, enroot in zip(uris, parsed, strict=True) if not valid_uri_problem(uri)]
    assert len(accepted) > 50
    for uri, enroot in accepted:
        user, name = parse_image_uri(uri)
        registry = name.registry or "registry-1.docker.io"
        repository = name.repository if name.registry or "/" in name.repository else f"library/{name.repository}"
        assert enroot == f"{user}|{registry}|{repository}|{name.digest or name.tag or 'latest'}", uri


def test_an_imported_image_is_named_by_its_digest() -> None:
    assert cache_file_name(DIGEST_VALUE) == DIGEST_VALUE.replace("sha256:", "sha256-") + ".sqsh"
    for wrong in ("", "sha256:abc", DIGEST_VALUE.upper(), DIGEST_VALUE.replace("sha256", "sha512"), "../../x"):
        with pytest.raises(ValueError):
            cache_file_name(wrong)


# --- the steps ------------------------------------------------------------------------------------------------


def test_an_import_is_a_step_beside_the_others_on_the_node_outside_any_container() -> None:
    argv = import_step_argv("42", "gpu01", "/netscratch/ada/images/.import-x/tiny.sqsh", URI)
    assert argv == [
        "srun",
        f"--job-name={IMPORT_STEP_NAME}",
        "--jobid=42",
        "--nodelist=gpu01",
        "--nodes=1",
        "--ntasks=1",
        "--overlap",
        "python3",
        "-I",
        "-S",
        "-c",
        IMPORTER_SOURCE,
        "import",
        "/netscratch/ada/images/.import-x/tiny.sqsh",
        URI,
    ]
    assert IMPORTER_SOURCE == Path(importer.__file__).read_text()
    digest = digest_step_argv("42", "gpu01", URI, python="/usr/bin/python3", srun="/opt/slurm/bin/srun")
    assert digest == ["/opt/slurm/bin/srun", *argv[1:7], "/usr/bin/python3", *argv[8:12], "digest", URI]


def test_an_import_whose_digest_cannot_be_looked_up_imports_nothing(fake_enroot: Callable[..., Path]) -> None:
    bin_dir = fake_enroot(status=1, import_digest="")
    result = run_importer(bin_dir, "import", "/tmp/never.sqsh", URI)
    assert result.returncode == 1
    assert (bin_dir / "ARGV").read_text().splitlines() == ["digest", "--", URI]  # enroot import never ran


def test_the_importers_first_line_says_where_it_runs() -> None:
    progress = ImportProgress()
    assert not progress.feed(event("job", "17", "gpu02"))  # no new status line: where, not how far
    assert (progress.job_id, progress.node) == ("17", "gpu02")
