"""jupyter_kernel_test's conformance suite against Asgard kernels, encrypted on both paths: every message
type a client sends, checked against the Jupyter messaging spec, through the kernel's CurveZMQ sockets
(ipykernel 7.4) and through the encrypting proxy (ipykernel 6)."""

from __future__ import annotations

import jupyter_kernel_test
import pytest


class AsgardKernelTests(jupyter_kernel_test.KernelTests):
    """What any client may ask of a Python kernel; each test_* of KernelTests runs with these samples."""

    __test__ = False  # run by the subclasses below, one per path
    encryption = ""  # the path the kernel must have taken (encryption.MODES)
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = ({"text": "zi", "matches": {"zip"}},)
    complete_code_samples = ("1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n")
    incomplete_code_samples = ('print("""hello', "def f(x):\n  x*2")
    invalid_code_samples = ("import = 7q",)
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('asgard')"
    code_execute_result = ({"code": "6*7", "result": "42"},)
    code_display_data = (
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))", "mime": "text/html"},
    )
    code_history_pattern = "6?7*"
    # Not "range": its check wants the session number of a tail reply (0, IPython's history kept in memory
    # in the container) in the range reply (1): IPython's history, not the transport.
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        assert cls.km.provisioner.encryption == cls.encryption  # type: ignore[attr-defined]


@pytest.mark.usefixtures("kernelspecs")
class TestThroughTheProxy(AsgardKernelTests):
    __test__ = True
    kernel_name = "asgard-test"
    encryption = "curve-proxy"


@pytest.mark.usefixtures("native_kernelspec")
class TestNativeCurve(AsgardKernelTests):
    __test__ = True
    kernel_name = "asgard-test-native"
    encryption = "curve"
