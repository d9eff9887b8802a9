"""The README's Python blocks, for the tests that run what they configure: each found by its first line."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_python(first_line: str) -> str:
    """The README's ```python block whose first line is first_line (a comment naming the file it belongs in)."""
    blocks = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.MULTILINE | re.DOTALL)
    found = [block for block in blocks if block.splitlines()[0] == first_line]
    if len(found) != 1:
        raise LookupError(f"{len(found)} ```python blocks in {README} start with {first_line!r}")
    return str(found[0])
