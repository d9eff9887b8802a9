/*
 * pyxis_standin.c - a stand-in for NVIDIA's Pyxis SPANK plugin, for the
 * jupyter-asgard test cluster (tests/cluster/cluster.py).
 *
 * Pyxis and Enroot cannot be installed on a test machine, so this plugin
 * accepts Pyxis's srun options with Pyxis's names, argument forms and error
 * messages, and simulates on the node just enough of a container for the
 * project's tests: the image's environment and working directory, real bind
 * mounts in a private mount namespace, named containers that persist, and a
 * JSON record of what the step asked for.  It is written from Pyxis's
 * documented behaviour (see shared/reference/pyxis.md); no Pyxis code is used.
 *
 * Build (done by cluster.py):
 *   gcc -shared -fPIC -O2 -Wall -Werror -o pyxis_standin.so pyxis_standin.c
 * plugstack.conf:
 *   required /path/pyxis_standin.so record_dir=DIR registry_dir=DIR
 *     record_dir    world-writable (1777): step records and named containers
 *     registry_dir  stand-in registry: a file REGISTRY/IMAGE:TAG per image
 *
 * Stand-in images
 *   An image is a text file, Dockerfile-like: "ENV KEY=VALUE" (or the legacy
 *   "ENV KEY VALUE") sets a variable of the image's environment, "WORKDIR
 *   /path" its working directory; every other line is ignored and an empty
 *   file is a valid image (no variables, workdir "/").  Values are literal:
 *   no $VAR expansion.  An image value that starts with '/' or '.' is a
 *   "squashfs" path on the node (relative to the job's working directory);
 *   anything else is a registry image [docker://][USER@][REGISTRY#]IMAGE[:TAG]
 *   (also REGISTRY/IMAGE when the first component contains '.' or ':', as
 *   enroot 4 accepts), default registry registry-1.docker.io, default tag
 *   latest, found as registry_dir/REGISTRY/IMAGE:TAG (IMAGE@DIGEST for a
 *   digest; for Docker Hub also library/IMAGE:TAG).
 *
 * Where things happen (Slurm 22.05, verified with srun on the test cluster)
 *   srun (local context): option callbacks validate arguments, so bad
 *     arguments fail srun before any allocation; PYXIS_CONTAINER_* variables
 *     act as defaults in slurm_spank_init_post_opt.
 *   slurmstepd user_init (once per node, as the user): named container lookup
 *     and creation, image "import", mount source and --container-save checks.
 *     Errors found here are NOT returned from user_init: Slurm would then let
 *     srun exit 0.  Like Pyxis, they are kept and reported by the task.
 *   task_init_privileged (task process, root): reports kept errors, then
 *     unshare(CLONE_NEWNS), makes / recursively private and performs the
 *     mounts.  A failure exits the task with 1; srun prints
 *     "slurmstepd-NODE: error: pyxis: ..." and exits non-zero.
 *   task_init (task process, as the user): environment, working directory,
 *     PYXIS_STANDIN_RECORD, record file.
 *   slurm_spank_exit (slurmstepd): --container-save writes the container's
 *     image (a stand-in image file) to the given path.
 *
 * What the task sees
 *   Working directory: --container-workdir, else the image's WORKDIR, else /
 *   (never srun's).  A missing --container-workdir fails the step
 *   ("pyxis: couldn't chdir to DIR: No such file or directory"); an image
 *   WORKDIR missing on the node falls back to / (recorded in "cwd").
 *   Environment: the job's, then every image ENV variable takes the image's
 *   value unless it is listed in --container-env and the job has it; LANG,
 *   LANGUAGE and LC_ALL are removed unless listed.  PYXIS_STANDIN_RECORD is
 *   the path of this node's record file.
 *   Mounts: SRC is resolved against the job's working directory (as enroot
 *   does), a relative DST against the container root "/".  A DST that does
 *   not exist on the node is not mounted ("mounted": false; a real container
 *   would create it).  "ro" remounts read-only; nosuid/nodev/noexec are
 *   applied; propagation flags are applied; "tmpfs" mounts a tmpfs,
 *   "umount" detaches what is mounted at DST.  When the task may not create
 *   a mount namespace (EPERM: a cluster whose daemons run as the user, see
 *   binder/), nothing is mounted and the step carries on: every mount is
 *   recorded "mounted": false with the reason; sources are still checked.
 *   Named containers: record_dir/containers/pyxis_NAME (a directory holding a
 *   copy of the image, "image", and the image reference, "source").  Created
 *   on first use, reused afterwards with the import skipped and the stored
 *   image's env/workdir (as Pyxis does, whatever --container-image says).
 *   A task using the container holds a shared flock on its ".lock" file (an
 *   fd inherited by the task), which is what "running" means for the "exec"
 *   flag.  Flags: create fails if the container exists; exec fails if it is
 *   not running; no_exec and auto use an existing one or create it (these
 *   are Pyxis's semantics).  Unlike Pyxis the directory is shared by all
 *   nodes and users of the test cluster.
 *   --container-mount-home, -remap-root, -entrypoint(-log), -writable/
 *   -readonly are accepted, validated and recorded only.
 *
 * Record: record_dir/JOBID.STEPID.json (written by the first task of node 0;
 * other nodes of a multi-node step write record_dir/JOBID.STEPID.NODE.json;
 * a batch step run with sbatch --container-image writes JOBID.batch.json),
 * mode 0644, owned by the job's user, written atomically, once when the task
 * starts (status "started") or fails (status "failed").  Fields:
 *   job_id, step_id, node, node_id, uid, gid, image, image_kind
 *   ("squashfs"|"registry"|null), image_file, registry, image_name,
 *   image_tag, image_env {K: V}, image_workdir, mounts [{source, target,
 *   flags [..], mounted, reason (why not mounted, or null)}], workdir,
 *   effective_workdir, cwd, container_name, container_name_flags,
 *   container_path, container_created, container_reused, writable,
 *   remap_root, mount_home, entrypoint, entrypoint_log (true/false/null =
 *   not given), container_env [..], save,
 *   argv [..], status ("started"|"failed"), error (text or null).
 * Steps without --container-image (and without --container-name) are plain
 * Slurm steps: no record, no changes.
 */

#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <slurm/spank.h>

SPANK_PLUGIN(pyxis, 1)

#define DEFAULT_REGISTRY "registry-1.docker.io"
#define STEP_BATCH 0xfffffffbu
#define STEP_EXTERN 0xfffffffcu
#define MAX_IMAGE_SIZE (4 * 1024 * 1024)

/* ------------------------------------------------------------------------- */
/* small helpers                                                             */

struct strlist {
	char **items;
	size_t len;
};

static char *xstrdup(const char *s)
{
	char *p = strdup(s ? s : "");
	if (p == NULL) {
		slurm_error("pyxis: could not allocate memory");
		abort();
	}
	return p;
}

static char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static char *xvasprintf(const char *fmt, va_list ap)
{
	char *s = NULL;

	if (vasprintf(&s, fmt, ap) < 0) {
		slurm_error("pyxis: could not allocate memory");
		abort();
	}
	return s;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	return s;
}

static void strlist_add(struct strlist *l, const char *s)
{
	char **p = realloc(l->items, (l->len + 2) * sizeof(*p));
	if (p == NULL) {
		slurm_error("pyxis: could not allocate memory");
		abort();
	}
	l->items = p;
	l->items[l->len++] = xstrdup(s);
	l->items[l->len] = NULL;
}

static bool strlist_has(const struct strlist *l, const char *s)
{
	for (size_t i = 0; i < l->len; ++i)
		if (strcmp(l->items[i], s) == 0)
			return true;
	return false;
}

static void strlist_add_unique(struct strlist *l, const char *s)
{
	if (!strlist_has(l, s))
		strlist_add(l, s);
}

/* Growable string buffer, used for JSON. */
struct sbuf {
	char *s;
	size_t len, cap;
};

static void sb_putn(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *p;
		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->s, cap);
		if (p == NULL) {
			slurm_error("pyxis: could not allocate memory");
			abort();
		}
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
	sb_putn(b, s, strlen(s));
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	sb_puts(b, s);
	free(s);
}

/* A JSON string (or null). Control characters, quotes and backslashes are escaped. */
static void sb_json_str(struct sbuf *b, const char *s)
{
	if (s == NULL) {
		sb_puts(b, "null");
		return;
	}
	sb_puts(b, "\"");
	for (const unsigned char *p = (const unsigned char *)s; *p; ++p) {
		switch (*p) {
		case '"': sb_puts(b, "\\\""); break;
		case '\\': sb_puts(b, "\\\\"); break;
		case '\n': sb_puts(b, "\\n"); break;
		case '\r': sb_puts(b, "\\r"); break;
		case '\t': sb_puts(b, "\\t"); break;
		case '\b': sb_puts(b, "\\b"); break;
		case '\f': sb_puts(b, "\\f"); break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				sb_printf(b, "\\u%04x", *p);
			else
				sb_putn(b, (const char *)p, 1);
		}
	}
	sb_puts(b, "\"");
}

static void sb_json_key(struct sbuf *b, const char *key)
{
	sb_puts(b, b->len > 1 ? ",\n  " : "\n  ");
	sb_json_str(b, key);
	sb_puts(b, ": ");
}

static void sb_json_tristate(struct sbuf *b, int v)
{
	sb_puts(b, v < 0 ? "null" : (v ? "true" : "false"));
}

static void sb_json_strlist(struct sbuf *b, char *const *items, size_t len)
{
	sb_puts(b, "[");
	for (size_t i = 0; i < len; ++i) {
		if (i > 0)
			sb_puts(b, ", ");
		sb_json_str(b, items[i]);
	}
	sb_puts(b, "]");
}

/* Lexically normalise an absolute path: collapse "//", "/./" and "/../". */
static char *normalize_path(const char *path)
{
	char *out = malloc(strlen(path) + 2);
	size_t len = 0;
	const char *p = path;

	if (out == NULL)
		abort();
	while (*p) {
		const char *start, *end;
		size_t n;

		while (*p == '/')
			++p;
		start = p;
		while (*p && *p != '/')
			++p;
		end = p;
		n = (size_t)(end - start);
		if (n == 0 || (n == 1 && start[0] == '.'))
			continue;
		if (n == 2 && start[0] == '.' && start[1] == '.') {
			while (len > 0 && out[len - 1] != '/')
				--len;
			if (len > 0)
				--len;
			continue;
		}
		out[len++] = '/';
		memcpy(out + len, start, n);
		len += n;
	}
	if (len == 0)
		out[len++] = '/';
	out[len] = '\0';
	return out;
}

/* An absolute, normalised path: relative paths are taken against base. */
static char *resolve_path(const char *base, const char *path)
{
	char *joined, *out;

	if (path[0] == '/')
		return normalize_path(path);
	joined = xasprintf("%s/%s", (base && base[0]) ? base : "/", path);
	out = normalize_path(joined);
	free(joined);
	return out;
}

static bool is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_regular(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int parse_bool(const char *s)
{
	static const char *yes[] = { "1", "y", "yes", "true", "on", NULL };
	static const char *no[] = { "0", "n", "no", "false", "off", NULL };

	for (int i = 0; yes[i]; ++i)
		if (strcasecmp(s, yes[i]) == 0)
			return 1;
	for (int i = 0; no[i]; ++i)
		if (strcasecmp(s, no[i]) == 0)
			return 0;
	return -1;
}

/* Read a whole (small) file; NULL with errno set on failure. */
static char *read_file(const char *path, size_t *size_out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct sbuf b = { 0 };
	char buf[8192];
	ssize_t n;

	if (fd < 0)
		return NULL;
	sb_puts(&b, "");
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		sb_putn(&b, buf, (size_t)n);
		if (b.len > MAX_IMAGE_SIZE) {
			errno = EFBIG;
			n = -1;
			break;
		}
	}
	if (n < 0) {
		int saved = errno;
		close(fd);
		free(b.s);
		errno = saved;
		return NULL;
	}
	close(fd);
	if (size_out)
		*size_out = b.len;
	return b.s;
}

static int write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Write a file atomically (temporary file + rename), mode 0644, and give it
 * to uid/gid when running as root so the user's later rewrites may replace it
 * (record_dir is sticky).
 */
static int write_file_atomic(const char *path, const char *data, size_t len, uid_t uid, gid_t gid)
{
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	int fd, rv = -1;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto out;
	if (write_all(fd, data, len) < 0)
		goto out_close;
	if (fchmod(fd, 0644) < 0)
		goto out_close;
	if (geteuid() == 0 && fchown(fd, uid, gid) < 0)
		goto out_close;
	if (close(fd) < 0) {
		fd = -1;
		goto out_unlink;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		goto out_unlink;
	rv = 0;
	goto out;
out_close:
	close(fd);
out_unlink:
	unlink(tmp);
out:
	free(tmp);
	return rv;
}

/* ------------------------------------------------------------------------- */
/* options                                                                   */

struct mount_entry {
	char *source;
	char *target;
	char *flags_str;      /* as given, '+'-separated, or "" */
	struct strlist flags;
	bool mounted;
	const char *reason;   /* why it is not mounted, or NULL */
};

static struct {
	char *image;
	struct mount_entry *mounts;
	size_t mounts_len;
	char *workdir;
	char *name_arg;       /* NAME[:FLAGS] as given, to detect repeats */
	char *name;
	char *name_flags;
	char *save;
	int mount_home;
	int remap_root;
	int entrypoint;
	int entrypoint_log;
	int writable;
	struct strlist env;
} args = {
	.mount_home = -1,
	.remap_root = -1,
	.entrypoint = -1,
	.entrypoint_log = -1,
	.writable = -1,
};

static int opt_image(int val, const char *optarg, int remote);
static int opt_mounts(int val, const char *optarg, int remote);
static int opt_workdir(int val, const char *optarg, int remote);
static int opt_name(int val, const char *optarg, int remote);
static int opt_save(int val, const char *optarg, int remote);
static int opt_mount_home(int val, const char *optarg, int remote);
static int opt_remap_root(int val, const char *optarg, int remote);
static int opt_entrypoint(int val, const char *optarg, int remote);
static int opt_entrypoint_log(int val, const char *optarg, int remote);
static int opt_writable(int val, const char *optarg, int remote);
static int opt_env(int val, const char *optarg, int remote);

static struct spank_option options[] = {
	{ "container-image", "[USER@][REGISTRY#]IMAGE[:TAG]|PATH",
	  "[pyxis] the image to use for the container filesystem. Can be either a docker image given as an "
	  "enroot URI, or a path to a squashfs file on the remote host filesystem.",
	  1, 0, opt_image },
	{ "container-mounts", "SRC:DST[:FLAGS][,SRC:DST...]",
	  "[pyxis] bind mount[s] inside the container. Mount flags are separated with \"+\", e.g. \"ro+rprivate\"",
	  1, 0, opt_mounts },
	{ "container-workdir", "PATH", "[pyxis] working directory inside the container", 1, 0, opt_workdir },
	{ "container-name", "NAME[:FLAGS]",
	  "[pyxis] name to use for saving and loading the container on the host. Unnamed containers are removed "
	  "after the slurm task is complete; named containers are not. If a container with this name already "
	  "exists, the existing container is used and the import is skipped. Flags: auto (default), create, exec, "
	  "no_exec.",
	  1, 0, opt_name },
	{ "container-save", "PATH",
	  "[pyxis] Save the container state to a squashfs file on the remote host filesystem.", 1, 0, opt_save },
	{ "container-mount-home", NULL,
	  "[pyxis] bind mount the user's home directory. System-level enroot settings might cause this directory "
	  "to be already-mounted.",
	  0, 1, opt_mount_home },
	{ "no-container-mount-home", NULL, "[pyxis] do not bind mount the user's home directory", 0, 0,
	  opt_mount_home },
	{ "container-remap-root", NULL,
	  "[pyxis] ask to be remapped to root inside the container. Does not grant elevated system permissions, "
	  "despite appearances.",
	  0, 1, opt_remap_root },
	{ "no-container-remap-root", NULL, "[pyxis] do not remap to root inside the container", 0, 0,
	  opt_remap_root },
	{ "container-entrypoint", NULL, "[pyxis] execute the entrypoint from the container image", 0, 1,
	  opt_entrypoint },
	{ "no-container-entrypoint", NULL, "[pyxis] do not execute the entrypoint from the container image", 0, 0,
	  opt_entrypoint },
	{ "container-entrypoint-log", NULL, "[pyxis] print the output of the entrypoint script", 0, 1,
	  opt_entrypoint_log },
	{ "container-writable", NULL, "[pyxis] make the container filesystem writable", 0, 1, opt_writable },
	{ "container-readonly", NULL, "[pyxis] make the container filesystem read-only", 0, 0, opt_writable },
	{ "container-env", "NAME[,NAME...]",
	  "[pyxis] names of environment variables to override with the host environment and set at the "
	  "entrypoint. By default, all exported host environment variables are set in the container after the "
	  "entrypoint is run, but their existing values in the image take precedence; the variables specified "
	  "with this flag are preserved from the host and set before the entrypoint runs",
	  1, 0, opt_env },
	SPANK_OPTIONS_TABLE_END
};

/* A string option given once; the same value again is fine (Slurm may call twice). */
static int set_string_option(char **slot, const char *name, const char *optarg)
{
	if (optarg == NULL || *optarg == '\0') {
		slurm_error("pyxis: --%s: argument required", name);
		return -1;
	}
	if (*slot != NULL) {
		if (strcmp(*slot, optarg) == 0)
			return 0;
		slurm_error("pyxis: --%s specified multiple times", name);
		return -1;
	}
	*slot = xstrdup(optarg);
	return 0;
}

static int opt_image(int val, const char *optarg, int remote)
{
	return set_string_option(&args.image, "container-image", optarg);
}

static int opt_workdir(int val, const char *optarg, int remote)
{
	if (optarg != NULL && *optarg != '\0' && optarg[0] != '/') {
		slurm_error("pyxis: --container-workdir: must be an absolute path: %s", optarg);
		return -1;
	}
	return set_string_option(&args.workdir, "container-workdir", optarg);
}

static int opt_save(int val, const char *optarg, int remote)
{
	if (optarg != NULL && *optarg != '\0' && optarg[strlen(optarg) - 1] == '/') {
		slurm_error("pyxis: --container-save: target is a directory");
		return -1;
	}
	return set_string_option(&args.save, "container-save", optarg);
}

static int opt_name(int val, const char *optarg, int remote)
{
	const char *colon;
	char *name, *flags;

	if (optarg == NULL || *optarg == '\0') {
		slurm_error("pyxis: --container-name: argument required");
		return -1;
	}
	if (args.name_arg != NULL) {
		if (strcmp(args.name_arg, optarg) == 0)
			return 0;
		slurm_error("pyxis: --container-name specified multiple times");
		return -1;
	}
	colon = strchr(optarg, ':');
	if (colon != NULL) {
		name = strndup(optarg, (size_t)(colon - optarg));
		flags = xstrdup(colon[1] ? colon + 1 : "auto");
	} else {
		name = xstrdup(optarg);
		flags = xstrdup("auto");
	}
	if (name == NULL)
		abort();
	if (name[0] == '\0') {
		slurm_error("pyxis: --container-name: empty name");
		goto fail;
	}
	if (strchr(name, '/') != NULL) {
		slurm_error("pyxis: --container-name: invalid name: %s", name);
		goto fail;
	}
	if (strcmp(flags, "auto") != 0 && strcmp(flags, "create") != 0 && strcmp(flags, "exec") != 0 &&
	    strcmp(flags, "no_exec") != 0) {
		slurm_error("pyxis: --container-name: flag must be \"auto\", \"create\", \"exec\" or \"no_exec\"");
		goto fail;
	}
	args.name_arg = xstrdup(optarg);
	args.name = name;
	args.name_flags = flags;
	return 0;
fail:
	free(name);
	free(flags);
	return -1;
}

static const char *known_mount_flags[] = {
	"ro", "rw", "bind", "rbind", "private", "rprivate", "slave", "rslave", "shared", "rshared",
	"unbindable", "runbindable", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "noatime", "atime",
	"nodiratime", "diratime", "relatime", "norelatime", "strictatime", "nostrictatime", "sync", "async",
	"dirsync", "defaults", "nofail", "silent", "loud", "x-detach", "x-move", NULL
};
static const char *known_mount_flag_prefixes[] = { "x-create=", "mode=", "size=", "nr_inodes=", "uid=", "gid=", NULL };

static bool mount_flag_known(const char *flag)
{
	for (int i = 0; known_mount_flags[i]; ++i)
		if (strcmp(flag, known_mount_flags[i]) == 0)
			return true;
	for (int i = 0; known_mount_flag_prefixes[i]; ++i)
		if (strncmp(flag, known_mount_flag_prefixes[i], strlen(known_mount_flag_prefixes[i])) == 0 &&
		    flag[strlen(known_mount_flag_prefixes[i])] != '\0')
			return true;
	return false;
}

static int add_mount_entry(const char *entry)
{
	char *dup = xstrdup(entry), *rest = dup, *src, *dst, *flags = NULL;
	struct mount_entry m = { 0 };
	int rv = -1;

	src = strsep(&rest, ":");
	if (src == NULL || *src == '\0') {
		slurm_error("pyxis: --container-mounts: invalid format: %s", entry);
		goto out;
	}
	dst = src;
	if (rest != NULL) {
		dst = strsep(&rest, ":");
		if (dst == NULL || *dst == '\0') {
			slurm_error("pyxis: --container-mounts: invalid format: %s", entry);
			goto out;
		}
		if (rest != NULL && *rest != '\0')
			flags = rest;
	}
	if (strspn(src, "./") == 0 && strcmp(src, "tmpfs") != 0 && strcmp(src, "umount") != 0) {
		slurm_error("pyxis: mount source must be a relative path, an absolute path, \"tmpfs\" or \"umount\"");
		goto out;
	}
	if (strspn(dst, "./") == 0) {
		slurm_error("pyxis: mount target must be a relative path or an absolute path");
		goto out;
	}
	if (flags != NULL) {
		char *fl = xstrdup(flags), *fr = fl, *f;
		while ((f = strsep(&fr, "+")) != NULL) {
			if (*f == '\0') {
				slurm_error("pyxis: --container-mounts: invalid format: %s", entry);
				free(fl);
				goto out_flags;
			}
			if (!mount_flag_known(f)) {
				slurm_error("pyxis: --container-mounts: invalid mount flag: %s", f);
				free(fl);
				goto out_flags;
			}
			strlist_add(&m.flags, f);
		}
		free(fl);
	}
	/* Skip an identical entry (Slurm may process options twice). */
	for (size_t i = 0; i < args.mounts_len; ++i) {
		if (strcmp(args.mounts[i].source, src) == 0 && strcmp(args.mounts[i].target, dst) == 0 &&
		    strcmp(args.mounts[i].flags_str, flags ? flags : "") == 0) {
			rv = 0;
			goto out_flags;
		}
	}
	m.source = xstrdup(src);
	m.target = xstrdup(dst);
	m.flags_str = xstrdup(flags ? flags : "");
	{
		struct mount_entry *p = realloc(args.mounts, (args.mounts_len + 1) * sizeof(*p));
		if (p == NULL)
			abort();
		args.mounts = p;
		args.mounts[args.mounts_len++] = m;
	}
	rv = 0;
	goto out;
out_flags:
	for (size_t i = 0; i < m.flags.len; ++i)
		free(m.flags.items[i]);
	free(m.flags.items);
out:
	free(dup);
	return rv;
}

static int opt_mounts(int val, const char *optarg, int remote)
{
	char *dup, *rest, *entry;
	int rv = 0;

	if (optarg == NULL || *optarg == '\0') {
		slurm_error("pyxis: --container-mounts: argument required");
		return -1;
	}
	dup = xstrdup(optarg);
	rest = dup;
	while ((entry = strsep(&rest, ",")) != NULL) {
		if (add_mount_entry(entry) < 0) {
			rv = -1;
			break;
		}
	}
	free(dup);
	return rv;
}

static int opt_env(int val, const char *optarg, int remote)
{
	char *dup, *rest, *name;
	struct strlist names = { 0 };
	int rv = 0;

	if (optarg == NULL || *optarg == '\0') {
		slurm_error("pyxis: --container-env: argument required");
		return -1;
	}
	dup = xstrdup(optarg);
	rest = dup;
	while ((name = strsep(&rest, ",")) != NULL) {
		if (*name == '\0') {
			slurm_error("pyxis: --container-env: invalid format: %s", optarg);
			rv = -1;
			break;
		}
		strlist_add(&names, name);
	}
	if (rv == 0)
		for (size_t i = 0; i < names.len; ++i)
			strlist_add_unique(&args.env, names.items[i]);
	for (size_t i = 0; i < names.len; ++i)
		free(names.items[i]);
	free(names.items);
	free(dup);
	return rv;
}

static int set_flag_pair(int *slot, int val, const char *on, const char *off)
{
	if (*slot != -1 && *slot != val) {
		slurm_error("pyxis: both --%s and --%s were specified", on, off);
		return -1;
	}
	*slot = val;
	return 0;
}

static int opt_mount_home(int val, const char *optarg, int remote)
{
	return set_flag_pair(&args.mount_home, val, "container-mount-home", "no-container-mount-home");
}

static int opt_remap_root(int val, const char *optarg, int remote)
{
	return set_flag_pair(&args.remap_root, val, "container-remap-root", "no-container-remap-root");
}

static int opt_entrypoint(int val, const char *optarg, int remote)
{
	return set_flag_pair(&args.entrypoint, val, "container-entrypoint", "no-container-entrypoint");
}

static int opt_entrypoint_log(int val, const char *optarg, int remote)
{
	args.entrypoint_log = val;
	return 0;
}

static int opt_writable(int val, const char *optarg, int remote)
{
	return set_flag_pair(&args.writable, val, "container-writable", "container-readonly");
}

/* ------------------------------------------------------------------------- */
/* plugin state                                                              */

struct image {
	struct strlist keys;
	struct strlist values;
	char *workdir;        /* WORKDIR of the image, or NULL */
	char *text;           /* the image file's contents */
	size_t text_len;
};

static struct {
	char record_dir[PATH_MAX];
	char registry_dir[PATH_MAX];
} config;

static struct {
	bool enabled;
	bool prepared;        /* user_init ran */
	uid_t uid;
	gid_t gid;
	uint32_t jobid, stepid, nodeid, nnodes;
	char node[256];
	char job_cwd[PATH_MAX];
	/* image */
	const char *image_kind;
	char *image_file;
	char *registry, *image_name, *image_tag;
	struct image img;
	bool have_img;
	/* named container */
	char *container_path;
	bool container_created;
	bool container_reused;
	/* results */
	struct strlist errors; /* lines reported on failure, kept from user_init */
	char *record_path;
	char *effective_workdir;
	char *cwd;
} ctx;

static void fail_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail_line(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	strlist_add(&ctx.errors, s);
	free(s);
}

static void report_errors(void)
{
	for (size_t i = 0; i < ctx.errors.len; ++i)
		slurm_error("%s", ctx.errors.items[i]);
}

static void parse_plugin_args(int ac, char **av)
{
	for (int i = 0; i < ac; ++i) {
		if (strncmp(av[i], "record_dir=", 11) == 0)
			snprintf(config.record_dir, sizeof(config.record_dir), "%s", av[i] + 11);
		else if (strncmp(av[i], "registry_dir=", 13) == 0)
			snprintf(config.registry_dir, sizeof(config.registry_dir), "%s", av[i] + 13);
		else
			slurm_info("pyxis: ignoring unknown plugin argument: %s", av[i]);
	}
}

/* ------------------------------------------------------------------------- */
/* SPANK entry points: srun, sbatch/salloc and slurmstepd                    */

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	spank_context_t c = spank_context();

	if (c != S_CTX_LOCAL && c != S_CTX_REMOTE && c != S_CTX_ALLOCATOR)
		return 0;
	parse_plugin_args(ac, av);
	for (int i = 0; options[i].name != NULL; ++i) {
		spank_err_t rc = spank_option_register(sp, &options[i]);
		if (rc != ESPANK_SUCCESS) {
			slurm_error("pyxis: couldn't register option %s: %s", options[i].name, spank_strerror(rc));
			return -1;
		}
	}
	return 0;
}

/* A variable of srun's environment (local) or of the job's (remote). */
static const char *env_default(spank_t sp, const char *name, char *buf, size_t len)
{
	if (spank_context() == S_CTX_REMOTE)
		return spank_getenv(sp, name, buf, (int)len) == ESPANK_SUCCESS ? buf : NULL;
	return getenv(name);
}

static int apply_env_defaults(spank_t sp)
{
	static char buf[65536];
	const char *v;
	int b;

	if ((v = env_default(sp, "PYXIS_CONTAINER_IMAGE", buf, sizeof(buf))) && args.image == NULL)
		if (opt_image(0, v, 0) < 0)
			return -1;
	if ((v = env_default(sp, "PYXIS_CONTAINER_MOUNTS", buf, sizeof(buf))) && args.mounts_len == 0)
		if (opt_mounts(0, v, 0) < 0)
			return -1;
	if ((v = env_default(sp, "PYXIS_CONTAINER_WORKDIR", buf, sizeof(buf))) && args.workdir == NULL)
		if (opt_workdir(0, v, 0) < 0)
			return -1;
	if ((v = env_default(sp, "PYXIS_CONTAINER_NAME", buf, sizeof(buf))) && args.name == NULL)
		if (opt_name(0, v, 0) < 0)
			return -1;
	if ((v = env_default(sp, "PYXIS_CONTAINER_SAVE", buf, sizeof(buf))) && args.save == NULL)
		if (opt_save(0, v, 0) < 0)
			return -1;
	if ((v = env_default(sp, "PYXIS_CONTAINER_ENV", buf, sizeof(buf))) && args.env.len == 0)
		if (opt_env(0, v, 0) < 0)
			return -1;
	if ((v = env_default(sp, "PYXIS_CONTAINER_MOUNT_HOME", buf, sizeof(buf))) && args.mount_home == -1 &&
	    (b = parse_bool(v)) >= 0)
		args.mount_home = b;
	if ((v = env_default(sp, "PYXIS_CONTAINER_REMAP_ROOT", buf, sizeof(buf))) && args.remap_root == -1 &&
	    (b = parse_bool(v)) >= 0)
		args.remap_root = b;
	if ((v = env_default(sp, "PYXIS_CONTAINER_ENTRYPOINT", buf, sizeof(buf))) && args.entrypoint == -1 &&
	    (b = parse_bool(v)) >= 0)
		args.entrypoint = b;
	if ((v = env_default(sp, "PYXIS_CONTAINER_ENTRYPOINT_LOG", buf, sizeof(buf))) &&
	    args.entrypoint_log == -1 && (b = parse_bool(v)) >= 0)
		args.entrypoint_log = b;
	if ((v = env_default(sp, "PYXIS_CONTAINER_WRITABLE", buf, sizeof(buf))) && args.writable == -1 &&
	    (b = parse_bool(v)) >= 0)
		args.writable = b;
	if ((v = env_default(sp, "PYXIS_CONTAINER_READONLY", buf, sizeof(buf))) && args.writable == -1 &&
	    (b = parse_bool(v)) >= 0)
		args.writable = !b;
	return 0;
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	spank_context_t c = spank_context();

	if (c != S_CTX_LOCAL && c != S_CTX_REMOTE && c != S_CTX_ALLOCATOR)
		return 0;
	if (apply_env_defaults(sp) < 0)
		return -1;
	if (args.image == NULL && args.name == NULL) {
		if (c == S_CTX_REMOTE)
			return 0;
		if (args.mounts_len > 0)
			slurm_error("pyxis: ignoring --container-mounts because neither --container-image nor --container-name is set");
		if (args.workdir != NULL)
			slurm_error("pyxis: ignoring --container-workdir because neither --container-image nor --container-name is set");
		if (args.save != NULL)
			slurm_error("pyxis: ignoring --container-save because neither --container-image nor --container-name is set");
		if (args.mount_home != -1)
			slurm_error("pyxis: ignoring --[no-]container-mount-home because neither --container-image nor --container-name is set");
		if (args.remap_root != -1)
			slurm_error("pyxis: ignoring --[no-]container-remap-root because neither --container-image nor --container-name is set");
		if (args.entrypoint != -1)
			slurm_error("pyxis: ignoring --[no-]container-entrypoint because neither --container-image nor --container-name is set");
		if (args.entrypoint_log != -1)
			slurm_error("pyxis: ignoring --container-entrypoint-log because neither --container-image nor --container-name is set");
		if (args.writable == 0)
			slurm_error("pyxis: ignoring --container-readonly because neither --container-image nor --container-name is set");
		if (args.writable == 1)
			slurm_error("pyxis: ignoring --container-writable because neither --container-image nor --container-name is set");
		return 0;
	}
	if (c != S_CTX_REMOTE)
		return 0;

	if (spank_get_item(sp, S_JOB_STEPID, &ctx.stepid) != ESPANK_SUCCESS) {
		slurm_error("pyxis: couldn't get job step ID");
		return -1;
	}
	/* The extern step runs no user task: never a container. */
	if (ctx.stepid == STEP_EXTERN)
		return 0;
	ctx.enabled = true;
	return 0;
}

/* ------------------------------------------------------------------------- */
/* node side: images                                                         */

static bool valid_env_name(const char *s, size_t n)
{
	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; ++i)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
			return false;
	return true;
}

static void image_set_env(struct image *img, const char *key, const char *value)
{
	for (size_t i = 0; i < img->keys.len; ++i) {
		if (strcmp(img->keys.items[i], key) == 0) {
			free(img->values.items[i]);
			img->values.items[i] = xstrdup(value);
			return;
		}
	}
	strlist_add(&img->keys, key);
	strlist_add(&img->values, value);
}

static void image_parse(struct image *img, char *text, size_t len)
{
	char *copy = xstrdup(text), *rest = copy, *line;

	img->text = text;
	img->text_len = len;
	while ((line = strsep(&rest, "\n")) != NULL) {
		size_t n;
		char *p = line, *arg;

		n = strlen(p);
		while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
			p[--n] = '\0';
		while (*p == ' ' || *p == '\t')
			++p;
		if (strncasecmp(p, "ENV", 3) == 0 && (p[3] == ' ' || p[3] == '\t')) {
			size_t klen;
			char *key, *value;

			arg = p + 4;
			while (*arg == ' ' || *arg == '\t')
				++arg;
			klen = strcspn(arg, "= \t");
			if (!valid_env_name(arg, klen))
				continue;
			if (arg[klen] == '=') {
				value = arg + klen + 1;
			} else {
				value = arg + klen;
				while (*value == ' ' || *value == '\t')
					++value;
			}
			key = strndup(arg, klen);
			if (key == NULL)
				abort();
			n = strlen(value);
			if (n >= 2 && value[0] == '"' && value[n - 1] == '"') {
				value[n - 1] = '\0';
				++value;
			}
			image_set_env(img, key, value);
			free(key);
		} else if (strncasecmp(p, "WORKDIR", 7) == 0 && (p[7] == ' ' || p[7] == '\t')) {
			char *wd;

			arg = p + 8;
			while (*arg == ' ' || *arg == '\t')
				++arg;
			if (*arg == '\0')
				continue;
			wd = resolve_path(img->workdir ? img->workdir : "/", arg);
			free(img->workdir);
			img->workdir = wd;
		}
	}
	free(copy);
}

/* Load an image file; on failure return -1 with errno set. */
static int image_load(struct image *img, const char *path)
{
	size_t len = 0;
	char *text;
	struct stat st;

	if (stat(path, &st) < 0)
		return -1;
	if (!S_ISREG(st.st_mode)) {
		errno = ENOENT; /* enroot: "No such file or directory" for anything but a file */
		return -1;
	}
	text = read_file(path, &len);
	if (text == NULL)
		return -1;
	image_parse(img, text, len);
	return 0;
}

static void add_start_failure_tail(void)
{
	fail_line("pyxis: couldn't start container");
	fail_line("pyxis: if the image has an unusual entrypoint, try using --no-container-entrypoint");
}

/* Split a registry reference into user, registry, name and tag (or digest). */
static void parse_registry_ref(const char *ref, char **user, char **registry, char **name, char **tag)
{
	const char *s = ref, *hash, *at, *slash;
	char *rest;
	size_t n;

	*user = NULL;
	if (strncmp(s, "docker://", 9) == 0)
		s += 9;
	else if (strncmp(s, "dockerd://", 10) == 0)
		s += 10;
	else if (strncmp(s, "podman://", 9) == 0)
		s += 9;

	hash = strchr(s, '#');
	if (hash != NULL) {
		at = memchr(s, '@', (size_t)(hash - s));
		if (at != NULL) {
			*user = strndup(s, (size_t)(at - s));
			*registry = strndup(at + 1, (size_t)(hash - at - 1));
		} else {
			*registry = strndup(s, (size_t)(hash - s));
		}
		rest = xstrdup(hash + 1);
	} else {
		at = strchr(s, '@');
		if (at != NULL && strncmp(at + 1, "sha256:", 7) != 0 &&
		    strcspn(s, "/:") >= (size_t)(at - s)) {
			*user = strndup(s, (size_t)(at - s));
			s = at + 1;
		}
		slash = strchr(s, '/');
		if (slash != NULL && (memchr(s, '.', (size_t)(slash - s)) || memchr(s, ':', (size_t)(slash - s)) ||
				      strncmp(s, "localhost/", 10) == 0)) {
			*registry = strndup(s, (size_t)(slash - s));
			rest = xstrdup(slash + 1);
		} else {
			*registry = xstrdup(DEFAULT_REGISTRY);
			rest = xstrdup(s);
		}
	}
	if (*registry == NULL || (*registry)[0] == '\0') {
		free(*registry);
		*registry = xstrdup(DEFAULT_REGISTRY);
	}

	at = strchr(rest, '@');
	if (at != NULL) {
		*name = strndup(rest, (size_t)(at - rest));
		*tag = xstrdup(at); /* "@sha256:..." */
	} else {
		slash = strrchr(rest, '/');
		at = strrchr(slash ? slash : rest, ':');
		if (at != NULL) {
			*name = strndup(rest, (size_t)(at - rest));
			*tag = xstrdup(at + 1);
		} else {
			*name = xstrdup(rest);
			*tag = xstrdup("latest");
		}
	}
	if (*name == NULL)
		abort();
	n = strlen(*tag);
	if (n == 0) {
		free(*tag);
		*tag = xstrdup("latest");
	}
	free(rest);
}

static char *registry_file(const char *registry, const char *name, const char *tag)
{
	if (config.registry_dir[0] == '\0')
		return NULL;
	if (tag[0] == '@')
		return xasprintf("%s/%s/%s%s", config.registry_dir, registry, name, tag);
	return xasprintf("%s/%s/%s:%s", config.registry_dir, registry, name, tag);
}

/* "Import" the step's image: 0 and ctx.img filled, or -1 with failure lines. */
static int import_image(void)
{
	const char *image = args.image;

	if (strspn(image, "./") > 0) {
		ctx.image_kind = "squashfs";
		ctx.image_file = resolve_path(ctx.job_cwd, image);
		if (image_load(&ctx.img, ctx.image_file) < 0) {
			int err = errno;
			fail_line("pyxis: failed to create container filesystem");
			fail_line("pyxis: printing enroot log file:");
			if (err == ENOENT || err == ENOTDIR)
				fail_line("pyxis:     [ERROR] No such file or directory: %s", ctx.image_file);
			else
				fail_line("pyxis:     [ERROR] %s: %s", strerror(err), ctx.image_file);
			add_start_failure_tail();
			return -1;
		}
		ctx.have_img = true;
		return 0;
	}

	ctx.image_kind = "registry";
	{
		char *user = NULL, *file = NULL, *url_name;
		bool hub;

		parse_registry_ref(image, &user, &ctx.registry, &ctx.image_name, &ctx.image_tag);
		hub = strcmp(ctx.registry, DEFAULT_REGISTRY) == 0 || strcmp(ctx.registry, "docker.io") == 0 ||
		      strcmp(ctx.registry, "index.docker.io") == 0;
		slurm_spank_log("pyxis: importing docker image: %s", image);

		file = registry_file(ctx.registry, ctx.image_name, ctx.image_tag);
		if (file != NULL && !is_regular(file) && hub && strchr(ctx.image_name, '/') == NULL) {
			char *lib = xasprintf("library/%s", ctx.image_name);
			free(file);
			file = registry_file(ctx.registry, lib, ctx.image_tag);
			free(lib);
		}
		if (file != NULL && image_load(&ctx.img, file) == 0) {
			ctx.image_file = file;
			ctx.have_img = true;
			slurm_spank_log("pyxis: imported docker image: %s", image);
			free(user);
			return 0;
		}
		free(file);
		url_name = (hub && strchr(ctx.image_name, '/') == NULL) ? xasprintf("library/%s", ctx.image_name)
								       : xstrdup(ctx.image_name);
		fail_line("pyxis: failed to import docker image");
		fail_line("pyxis: printing enroot log file:");
		fail_line("pyxis:     [INFO] Querying registry for permission grant");
		fail_line("pyxis:     [INFO] Authenticating with user: %s", user ? user : "<anonymous>");
		fail_line("pyxis:     [INFO] Authentication succeeded");
		fail_line("pyxis:     [INFO] Fetching image manifest list");
		fail_line("pyxis:     [ERROR] URL https://%s/v2/%s/manifests/%s returned error code: 404 Not Found",
			  hub ? DEFAULT_REGISTRY : ctx.registry, url_name,
			  ctx.image_tag[0] == '@' ? ctx.image_tag + 1 : ctx.image_tag);
		add_start_failure_tail();
		free(url_name);
		free(user);
		return -1;
	}
}

/* ------------------------------------------------------------------------- */
/* node side: named containers                                               */

/* true if some task holds the container's lock, i.e. the container runs. */
static bool container_running(const char *path)
{
	char *lock = xasprintf("%s/.lock", path);
	int fd = open(lock, O_RDONLY | O_CLOEXEC);
	bool running = false;

	free(lock);
	if (fd < 0)
		return false;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK)
		running = true;
	close(fd);
	return running;
}

static int prepare_named_container(void)
{
	char *dir = xasprintf("%s/containers", config.record_dir);
	bool exists, running;

	if (config.record_dir[0] == '\0') {
		fail_line("pyxis: couldn't get list of containers");
		free(dir);
		return -1;
	}
	if (mkdir(dir, 01777) == 0)
		chmod(dir, 01777);
	free(dir);
	ctx.container_path = xasprintf("%s/containers/pyxis_%s", config.record_dir, args.name);

	exists = is_dir(ctx.container_path);
	running = exists && container_running(ctx.container_path);
	if (strcmp(args.name_flags, "create") == 0 && exists) {
		fail_line("pyxis: error: \"create\" flag was passed to --container-name but the container already exists");
		return -1;
	}
	if (strcmp(args.name_flags, "exec") == 0 && !running) {
		fail_line("pyxis: error: \"exec\" flag was passed to --container-name but the container is not running");
		return -1;
	}
	if (exists) {
		char *path = xasprintf("%s/image", ctx.container_path);
		slurm_info("pyxis: reusing existing container filesystem");
		ctx.container_reused = true;
		if (image_load(&ctx.img, path) == 0)
			ctx.have_img = true;
		free(path);
		return 0;
	}
	if (args.image == NULL) {
		fail_line("pyxis: error: a container with name \"%s\" does not exist, and --container-image is not set",
			  args.name);
		return -1;
	}
	if (import_image() < 0)
		return -1;
	if (mkdir(ctx.container_path, 0755) < 0) {
		if (errno == EEXIST) {
			/* Another step created it meanwhile: use it. */
			ctx.container_reused = true;
			return 0;
		}
		fail_line("pyxis: failed to create container filesystem");
		fail_line("pyxis: printing enroot log file:");
		fail_line("pyxis:     [ERROR] %s: %s", strerror(errno), ctx.container_path);
		add_start_failure_tail();
		return -1;
	}
	{
		char *img = xasprintf("%s/image", ctx.container_path);
		char *src = xasprintf("%s/source", ctx.container_path);
		char *line = xasprintf("%s\n", args.image);
		if (write_file_atomic(img, ctx.img.text, ctx.img.text_len, ctx.uid, ctx.gid) < 0 ||
		    write_file_atomic(src, line, strlen(line), ctx.uid, ctx.gid) < 0)
			slurm_info("pyxis: couldn't write container files in %s: %s", ctx.container_path,
				   strerror(errno));
		free(img);
		free(src);
		free(line);
	}
	ctx.container_created = true;
	return 0;
}

/* ------------------------------------------------------------------------- */
/* node side: step preparation (slurmstepd, once per node, as the user)     */

static void get_node_name(spank_t sp)
{
	char buf[256];

	if (spank_getenv(sp, "SLURMD_NODENAME", buf, sizeof(buf)) == ESPANK_SUCCESS && buf[0]) {
		snprintf(ctx.node, sizeof(ctx.node), "%s", buf);
		return;
	}
	/* With topology/none SLURM_TOPOLOGY_ADDR is the node's name. */
	if (spank_getenv(sp, "SLURM_TOPOLOGY_ADDR", buf, sizeof(buf)) == ESPANK_SUCCESS && buf[0]) {
		char *dot = strrchr(buf, '.');
		snprintf(ctx.node, sizeof(ctx.node), "%s", dot ? dot + 1 : buf);
		return;
	}
	if (gethostname(buf, sizeof(buf)) == 0) {
		buf[sizeof(buf) - 1] = '\0';
		snprintf(ctx.node, sizeof(ctx.node), "%s", buf);
	}
}

static int get_job_info(spank_t sp)
{
	if (spank_get_item(sp, S_JOB_UID, &ctx.uid) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_GID, &ctx.gid) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_ID, &ctx.jobid) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_STEPID, &ctx.stepid) != ESPANK_SUCCESS) {
		slurm_error("pyxis: couldn't get job information");
		return -1;
	}
	if (spank_get_item(sp, S_JOB_NODEID, &ctx.nodeid) != ESPANK_SUCCESS)
		ctx.nodeid = 0;
	if (spank_get_item(sp, S_JOB_NNODES, &ctx.nnodes) != ESPANK_SUCCESS)
		ctx.nnodes = 1;
	get_node_name(sp);
	if (spank_getenv(sp, "PWD", ctx.job_cwd, sizeof(ctx.job_cwd)) != ESPANK_SUCCESS || ctx.job_cwd[0] != '/')
		if (getcwd(ctx.job_cwd, sizeof(ctx.job_cwd)) == NULL)
			snprintf(ctx.job_cwd, sizeof(ctx.job_cwd), "/");
	return 0;
}

static char *step_name(void)
{
	if (ctx.stepid == STEP_BATCH)
		return xasprintf("%u.batch", ctx.jobid);
	return xasprintf("%u.%u", ctx.jobid, ctx.stepid);
}

static void compute_record_path(void)
{
	char *step;

	if (config.record_dir[0] == '\0')
		return;
	step = step_name();
	if (ctx.nodeid == 0)
		ctx.record_path = xasprintf("%s/%s.json", config.record_dir, step);
	else
		ctx.record_path = xasprintf("%s/%s.%s.json", config.record_dir, step, ctx.node);
	free(step);
}

static void check_mount_sources(void)
{
	for (size_t i = 0; i < args.mounts_len; ++i) {
		struct mount_entry *m = &args.mounts[i];
		struct stat st;
		char *src;

		if (strcmp(m->source, "tmpfs") == 0 || strcmp(m->source, "umount") == 0)
			continue;
		src = resolve_path(ctx.job_cwd, m->source);
		if (stat(src, &st) < 0) {
			int err = errno;
			char *dst = resolve_path("/", m->target);
			fail_line("pyxis: container start failed with error code: 1");
			fail_line("pyxis: printing enroot log file:");
			fail_line("pyxis:     enroot-mount: failed to mount: %s at %s: %s", src, dst, strerror(err));
			if (err == ENOENT)
				fail_line("pyxis:     [ERROR] No such file or directory: %s", src);
			add_start_failure_tail();
			free(dst);
			free(src);
			return;
		}
		free(src);
	}
}

int slurm_spank_user_init(spank_t sp, int ac, char **av)
{
	if (!ctx.enabled)
		return 0;
	if (get_job_info(sp) < 0) {
		fail_line("pyxis: couldn't get job information");
		ctx.prepared = true;
		return 0;
	}
	compute_record_path();

	/* Errors are kept and reported by the task: see the header comment. */
	if (args.name != NULL) {
		if (prepare_named_container() < 0)
			goto done;
	} else if (import_image() < 0) {
		goto done;
	}
	check_mount_sources();
	if (ctx.errors.len == 0 && args.save != NULL) {
		char *save = resolve_path(ctx.job_cwd, args.save);
		if (is_dir(save))
			fail_line("pyxis: --container-save: target is a directory");
		free(save);
	}
	ctx.effective_workdir = xstrdup(args.workdir ? args.workdir
					 : (ctx.have_img && ctx.img.workdir) ? ctx.img.workdir : "/");
done:
	ctx.prepared = true;
	return 0;
}

/* ------------------------------------------------------------------------- */
/* node side: the record                                                     */

static void write_record(spank_t sp, const char *status, const char *error)
{
	struct sbuf b = { 0 };
	int argc = 0;
	char **argv = NULL;

	if (ctx.record_path == NULL)
		return;
	if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS) {
		argc = 0;
		argv = NULL;
	}

	sb_puts(&b, "{");
	sb_json_key(&b, "job_id"); sb_printf(&b, "%u", ctx.jobid);
	sb_json_key(&b, "step_id"); sb_printf(&b, "%u", ctx.stepid);
	sb_json_key(&b, "node"); sb_json_str(&b, ctx.node);
	sb_json_key(&b, "node_id"); sb_printf(&b, "%u", ctx.nodeid);
	sb_json_key(&b, "uid"); sb_printf(&b, "%u", (unsigned)ctx.uid);
	sb_json_key(&b, "gid"); sb_printf(&b, "%u", (unsigned)ctx.gid);
	sb_json_key(&b, "image"); sb_json_str(&b, args.image);
	sb_json_key(&b, "image_kind"); sb_json_str(&b, ctx.image_kind);
	sb_json_key(&b, "image_file"); sb_json_str(&b, ctx.image_file);
	sb_json_key(&b, "registry"); sb_json_str(&b, ctx.registry);
	sb_json_key(&b, "image_name"); sb_json_str(&b, ctx.image_name);
	sb_json_key(&b, "image_tag"); sb_json_str(&b, ctx.image_tag);
	sb_json_key(&b, "image_env");
	if (ctx.have_img) {
		sb_puts(&b, "{");
		for (size_t i = 0; i < ctx.img.keys.len; ++i) {
			if (i > 0)
				sb_puts(&b, ", ");
			sb_json_str(&b, ctx.img.keys.items[i]);
			sb_puts(&b, ": ");
			sb_json_str(&b, ctx.img.values.items[i]);
		}
		sb_puts(&b, "}");
	} else {
		sb_puts(&b, "null");
	}
	sb_json_key(&b, "image_workdir"); sb_json_str(&b, ctx.have_img ? ctx.img.workdir : NULL);
	sb_json_key(&b, "mounts");
	sb_puts(&b, "[");
	for (size_t i = 0; i < args.mounts_len; ++i) {
		struct mount_entry *m = &args.mounts[i];
		sb_puts(&b, i > 0 ? ",\n    {" : "\n    {");
		sb_puts(&b, "\"source\": ");
		sb_json_str(&b, m->source);
		sb_puts(&b, ", \"target\": ");
		sb_json_str(&b, m->target);
		sb_puts(&b, ", \"flags\": ");
		sb_json_strlist(&b, m->flags.items, m->flags.len);
		sb_puts(&b, ", \"mounted\": ");
		sb_puts(&b, m->mounted ? "true" : "false");
		sb_puts(&b, ", \"reason\": ");
		sb_json_str(&b, m->reason);
		sb_puts(&b, "}");
	}
	sb_puts(&b, args.mounts_len ? "\n  ]" : "]");
	sb_json_key(&b, "workdir"); sb_json_str(&b, args.workdir);
	sb_json_key(&b, "effective_workdir"); sb_json_str(&b, ctx.effective_workdir);
	sb_json_key(&b, "cwd"); sb_json_str(&b, ctx.cwd);
	sb_json_key(&b, "container_name"); sb_json_str(&b, args.name);
	sb_json_key(&b, "container_name_flags"); sb_json_str(&b, args.name_flags);
	sb_json_key(&b, "container_path"); sb_json_str(&b, ctx.container_path);
	sb_json_key(&b, "container_created"); sb_puts(&b, ctx.container_created ? "true" : "false");
	sb_json_key(&b, "container_reused"); sb_puts(&b, ctx.container_reused ? "true" : "false");
	sb_json_key(&b, "writable"); sb_json_tristate(&b, args.writable);
	sb_json_key(&b, "remap_root"); sb_json_tristate(&b, args.remap_root);
	sb_json_key(&b, "mount_home"); sb_json_tristate(&b, args.mount_home);
	sb_json_key(&b, "entrypoint"); sb_json_tristate(&b, args.entrypoint);
	sb_json_key(&b, "entrypoint_log"); sb_json_tristate(&b, args.entrypoint_log);
	sb_json_key(&b, "container_env"); sb_json_strlist(&b, args.env.items, args.env.len);
	sb_json_key(&b, "save"); sb_json_str(&b, args.save);
	sb_json_key(&b, "argv"); sb_json_strlist(&b, argv, argv ? (size_t)argc : 0);
	sb_json_key(&b, "status"); sb_json_str(&b, status);
	sb_json_key(&b, "error"); sb_json_str(&b, error);
	sb_puts(&b, "\n}\n");

	if (write_file_atomic(ctx.record_path, b.s, b.len, ctx.uid, ctx.gid) < 0)
		slurm_info("pyxis: couldn't write record %s: %s", ctx.record_path, strerror(errno));
	free(b.s);
}

static bool first_local_task(spank_t sp)
{
	int task = 0;

	if (spank_get_item(sp, S_TASK_ID, &task) != ESPANK_SUCCESS)
		return true;
	return task == 0;
}

/* Report a failure in the task: print it, record it, fail the task. */
static int task_fail(spank_t sp)
{
	struct sbuf b = { 0 };

	report_errors();
	if (first_local_task(sp)) {
		sb_puts(&b, "");
		for (size_t i = 0; i < ctx.errors.len; ++i) {
			if (i > 0)
				sb_puts(&b, "\n");
			sb_puts(&b, ctx.errors.items[i]);
		}
		write_record(sp, "failed", b.s);
	}
	free(b.s);
	return -1;
}

/* ------------------------------------------------------------------------- */
/* node side: the task (root, then the user)                                 */

static unsigned long mount_flag_bits(const struct strlist *flags, bool *remount)
{
	unsigned long bits = 0;

	*remount = false;
	for (size_t i = 0; i < flags->len; ++i) {
		const char *f = flags->items[i];
		if (strcmp(f, "ro") == 0)
			bits |= MS_RDONLY, *remount = true;
		else if (strcmp(f, "nosuid") == 0)
			bits |= MS_NOSUID, *remount = true;
		else if (strcmp(f, "nodev") == 0)
			bits |= MS_NODEV, *remount = true;
		else if (strcmp(f, "noexec") == 0)
			bits |= MS_NOEXEC, *remount = true;
	}
	return bits;
}

static unsigned long propagation_bits(const struct strlist *flags)
{
	static const struct { const char *name; unsigned long bits; } table[] = {
		{ "private", MS_PRIVATE }, { "rprivate", MS_PRIVATE | MS_REC },
		{ "slave", MS_SLAVE }, { "rslave", MS_SLAVE | MS_REC },
		{ "shared", MS_SHARED }, { "rshared", MS_SHARED | MS_REC },
		{ "unbindable", MS_UNBINDABLE }, { "runbindable", MS_UNBINDABLE | MS_REC },
		{ NULL, 0 }
	};
	unsigned long bits = 0;

	for (size_t i = 0; i < flags->len; ++i)
		for (int j = 0; table[j].name; ++j)
			if (strcmp(flags->items[i], table[j].name) == 0)
				bits = table[j].bits;
	return bits;
}

static char *tmpfs_data(const struct strlist *flags)
{
	struct sbuf b = { 0 };

	sb_puts(&b, "");
	for (size_t i = 0; i < flags->len; ++i) {
		const char *f = flags->items[i];
		if (strncmp(f, "mode=", 5) == 0 || strncmp(f, "size=", 5) == 0 || strncmp(f, "nr_inodes=", 10) == 0 ||
		    strncmp(f, "uid=", 4) == 0 || strncmp(f, "gid=", 4) == 0) {
			if (b.len)
				sb_puts(&b, ",");
			sb_puts(&b, f);
		}
	}
	return b.s;
}

static void mount_failure(const char *src, const char *dst, int err)
{
	fail_line("pyxis: container start failed with error code: 1");
	fail_line("pyxis: printing enroot log file:");
	fail_line("pyxis:     enroot-mount: failed to mount: %s at %s: %s", src, dst, strerror(err));
	add_start_failure_tail();
}

static int do_mounts(void)
{
	if (args.mounts_len == 0)
		return 0;
	if (unshare(CLONE_NEWNS) < 0) {
		if (errno == EPERM) {
			/* An unprivileged test cluster: the step runs, its mounts are recorded, not made. */
			slurm_info("pyxis: no privilege to mount (unprivileged test cluster): mounts not made");
			for (size_t i = 0; i < args.mounts_len; ++i)
				args.mounts[i].reason = "unprivileged test cluster: no mount namespace (Operation not permitted)";
			return 0;
		}
		fail_line("pyxis: couldn't create mount namespace: %s", strerror(errno));
		return -1;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		fail_line("pyxis: couldn't make / private: %s", strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < args.mounts_len; ++i) {
		struct mount_entry *m = &args.mounts[i];
		char *dst = resolve_path("/", m->target);
		bool remount;
		unsigned long bits = mount_flag_bits(&m->flags, &remount);
		unsigned long prop = propagation_bits(&m->flags);
		struct stat st;

		if (stat(dst, &st) < 0) {
			/* A real container would create the target: here it stays unmounted. */
			slurm_info("pyxis: mount target %s does not exist on the node: not mounted", dst);
			m->reason = "target does not exist on the node";
			free(dst);
			continue;
		}
		if (strcmp(m->source, "umount") == 0) {
			m->mounted = umount2(dst, MNT_DETACH) == 0;
			if (!m->mounted)
				m->reason = xstrdup(strerror(errno));
			free(dst);
			continue;
		}
		if (strcmp(m->source, "tmpfs") == 0) {
			char *data = tmpfs_data(&m->flags);
			if (mount("tmpfs", dst, "tmpfs", bits | MS_NOSUID | MS_NODEV, data[0] ? data : NULL) < 0) {
				mount_failure("tmpfs", dst, errno);
				free(data);
				free(dst);
				return -1;
			}
			free(data);
		} else {
			char *src = resolve_path(ctx.job_cwd, m->source);
			if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0) {
				mount_failure(src, dst, errno);
				free(src);
				free(dst);
				return -1;
			}
			if (remount && mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | bits, NULL) < 0) {
				mount_failure(src, dst, errno);
				free(src);
				free(dst);
				return -1;
			}
			free(src);
		}
		if (prop && mount(NULL, dst, NULL, prop, NULL) < 0)
			slurm_info("pyxis: couldn't change propagation of %s: %s", dst, strerror(errno));
		m->mounted = true;
		free(dst);
	}
	return 0;
}

int slurm_spank_task_init_privileged(spank_t sp, int ac, char **av)
{
	if (!ctx.enabled)
		return 0;
	if (!ctx.prepared)
		fail_line("pyxis: couldn't start container");
	if (ctx.errors.len > 0)
		return task_fail(sp);
	if (do_mounts() < 0)
		return task_fail(sp);
	return 0;
}

static void set_task_env(spank_t sp)
{
	static const char *dropped[] = { "LANG", "LANGUAGE", "LC_ALL", NULL };
	static char buf[1 << 16];

	for (int i = 0; dropped[i]; ++i)
		if (!strlist_has(&args.env, dropped[i]))
			spank_unsetenv(sp, dropped[i]);
	if (ctx.have_img) {
		for (size_t i = 0; i < ctx.img.keys.len; ++i) {
			const char *key = ctx.img.keys.items[i];
			if (strlist_has(&args.env, key) && spank_getenv(sp, key, buf, sizeof(buf)) == ESPANK_SUCCESS)
				continue;
			if (spank_setenv(sp, key, ctx.img.values.items[i], 1) != ESPANK_SUCCESS)
				slurm_info("pyxis: failed to set %s", key);
		}
	}
	if (ctx.record_path != NULL)
		spank_setenv(sp, "PYXIS_STANDIN_RECORD", ctx.record_path, 1);
}

/* The task keeps a shared lock on the named container while it runs. */
static void hold_container_lock(void)
{
	char *lock;
	int fd;

	if (ctx.container_path == NULL)
		return;
	lock = xasprintf("%s/.lock", ctx.container_path);
	fd = open(lock, O_RDONLY | O_CREAT, 0644);
	if (fd < 0 && errno == EACCES)
		fd = open(lock, O_RDONLY);
	if (fd >= 0 && flock(fd, LOCK_SH) < 0) {
		close(fd);
		fd = -1;
	}
	if (fd < 0)
		slurm_info("pyxis: couldn't lock %s: %s", lock, strerror(errno));
	free(lock);
	/* fd is inherited by the task on purpose (no O_CLOEXEC). */
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	const char *wd;

	if (!ctx.enabled)
		return 0;
	if (ctx.errors.len > 0)
		return task_fail(sp);

	wd = ctx.effective_workdir ? ctx.effective_workdir : "/";
	if (chdir(wd) < 0) {
		int err = errno;
		if (args.workdir != NULL) {
			fail_line("pyxis: couldn't chdir to %s: %s", wd, strerror(err));
			return task_fail(sp);
		}
		/* The image's WORKDIR exists in a real image; a stand-in may name one missing here. */
		slurm_info("pyxis: image workdir %s does not exist on the node, using /", wd);
		if (chdir("/") < 0) {
			fail_line("pyxis: couldn't chdir to container cwd: %s", strerror(errno));
			return task_fail(sp);
		}
		wd = "/";
	}
	ctx.cwd = xstrdup(wd);
	set_task_env(sp);
	hold_container_lock();
	if (first_local_task(sp))
		write_record(sp, "started", NULL);
	return 0;
}

/* --container-save: store the container (its stand-in image) at the path given. */
int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	char *path;

	if (spank_context() != S_CTX_REMOTE || !ctx.enabled || !ctx.prepared || ctx.errors.len > 0 ||
	    args.save == NULL || !ctx.have_img)
		return 0;
	path = resolve_path(ctx.job_cwd, args.save);
	slurm_spank_log("pyxis: saving container filesystem at %s", path);
	if (is_dir(path)) {
		slurm_error("pyxis: --container-save: target is a directory");
	} else if (write_file_atomic(path, ctx.img.text, ctx.img.text_len, ctx.uid, ctx.gid) < 0) {
		slurm_error("pyxis: failed to save container filesystem");
		slurm_error("pyxis: printing enroot log file:");
		slurm_error("pyxis:     [ERROR] %s: %s", strerror(errno), path);
	}
	free(path);
	return 0;
}
