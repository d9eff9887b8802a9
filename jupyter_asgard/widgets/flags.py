"""Pyxis's flag pairs (--container-writable/--container-readonly, ...) as the kernelspec has them: on, off, or
unset, where the site's default (its enroot configuration) applies. A checkbox has no third state, and a
kernel loaded and saved again through it would pin the site's default for good."""

from __future__ import annotations

import ipywidgets as w

CHOICES = (("site default", "default"), ("yes", "yes"), ("no", "no"))
FLAG_OF = {"default": None, "yes": True, "no": False}


class PyxisFlag(w.Dropdown):  # type: ignore[misc]  # ipywidgets is untyped: its classes are Any to mypy
    """One flag of a container: flag is True, False or None (the site's default)."""

    def __init__(self, description: str, flag: bool | None = None) -> None:
        super().__init__(
            options=CHOICES,
            description=description,
            style={"description_width": "initial"},
            layout=w.Layout(width="auto"),
        )
        self.flag = flag

    @property
    def flag(self) -> bool | None:
        return FLAG_OF[self.value]

    @flag.setter
    def flag(self, flag: bool | None) -> None:
        self.value = next(value for value, meaning in FLAG_OF.items() if meaning is flag)
