"""Editable mount rows: source, destination, read-only, remove; a bad row says what is wrong right there."""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as w

from ..errors import MountError
from ..launch.mounts import parse_mount

ERROR_STYLE = "color: var(--jp-error-color1, #c62828)"


class MountRow(w.VBox):  # type: ignore[misc]  # ipywidgets is untyped: its classes are Any to mypy
    """One SRC:DST[:FLAGS] entry; flags other than ro (e.g. rprivate) are kept as loaded."""

    def __init__(self, entry: str, on_change: Callable[[], None], on_remove: Callable[[MountRow], None]) -> None:
        source, target, flags = _split(entry)
        self.source = w.Text(
            source, placeholder="source on the cluster, e.g. /netscratch/$USER/data", layout=w.Layout(width="38%")
        )
        self.target = w.Text(target, placeholder="inside the container, e.g. /data", layout=w.Layout(width="34%"))
        self.read_only = w.Checkbox("ro" in flags, description="read-only", indent=False, layout=w.Layout(width="auto"))
        self.remove = w.Button(icon="trash", tooltip="Remove this mount", layout=w.Layout(width="36px"))
        self.error = w.HTML()
        self.other_flags = [flag for flag in flags if flag not in ("ro", "rw")]
        for control in (self.source, self.target, self.read_only):
            control.observe(lambda _: on_change(), "value")
        self.remove.on_click(lambda _: on_remove(self))
        fields = w.HBox([self.source, self.target, self.read_only, self.remove], layout=w.Layout(align_items="center"))
        super().__init__([fields, self.error])

    @property
    def entry(self) -> str:
        """The row as Pyxis reads it; "" for a row left empty."""
        source, target = self.source.value.strip(), self.target.value.strip()
        if not source and not target:
            return ""
        flags = (["ro"] if self.read_only.value else []) + self.other_flags
        return ":".join([source, target or source] + (["+".join(flags)] if flags else []))

    def check(self) -> str:
        """Show and return this row's problem ("" if none)."""
        problem = ""
        if self.entry:
            try:
                parse_mount(self.entry, expanded=False)  # as typed: its variables are expanded at the start
            except MountError as error:
                problem = str(error)
        self.error.value = f'<span style="{ERROR_STYLE}">{html.escape(problem)}</span>' if problem else ""
        return problem


class MountList(w.VBox):  # type: ignore[misc]  # ipywidgets is untyped: its classes are Any to mypy
    """The mounts, pre-filled with the site's defaults; "Add mount" appends an empty row."""

    def __init__(self, entries: list[str], on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self.add = w.Button(description="Add mount", icon="plus", layout=w.Layout(width="auto"))
        self.add.on_click(lambda _: self.append(""))
        self.rows: list[MountRow] = []
        super().__init__()
        self.set_entries(entries)

    def set_entries(self, entries: list[str]) -> None:
        self.rows = [self._row(entry) for entry in entries]
        self._layout()

    def append(self, entry: str) -> MountRow:
        row = self._row(entry)
        self.rows.append(row)
        self._layout()
        return row

    def entries(self) -> list[str]:
        return [row.entry for row in self.rows if row.entry]

    def valid_entries(self) -> list[str]:
        return [row.entry for row in self.rows if row.entry and not row.check()]

    def problems(self) -> list[str]:
        return [problem for problem in (row.check() for row in self.rows) if problem]

    def _row(self, entry: str) -> MountRow:
        return MountRow(entry, self._changed, self._remove)

    def _remove(self, row: MountRow) -> None:
        self.rows.remove(row)
        self._layout()

    def _changed(self) -> None:
        self.problems()
        self.on_change()

    def _layout(self) -> None:
        self.children = [*self.rows, self.add]
        self._changed()


def _split(entry: str) -> tuple[str, str, list[str]]:
    parts = entry.split(":")
    source = parts[0] if parts else ""
    target = parts[1] if len(parts) > 1 else source
    flags = [flag for flag in parts[2].replace(",", "+").split("+") if flag] if len(parts) > 2 else []
    return source, target, flags
