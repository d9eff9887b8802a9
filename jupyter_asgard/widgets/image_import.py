"""ImageImportBox: import a registry image into the user's image directory from the panel, and follow it.

An import is a Slurm job that can wait in the queue and then take minutes, so the box never waits for it in
the cell: the import runs as a task of the ImageImports it is given (on the kernel's event loop), and the box
follows it in a task of its own, showing its status line and a progress bar (enroot's layers, then the
squashfs' percentage), with Cancel
while it runs. A refusal or a failure shows in the box in the backend's words, with its hint; once imported,
on_imported is told (the panel lists its images again and selects the new one).
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable
from typing import Any

import ipywidgets as w

from ..containers.image_imports import ImageImport, ImageImports
from ..errors import AsgardError
from .mounts import ERROR_STYLE

UPDATE_SECONDS = 0.5  # how often a running import's status line and progress are shown anew
URI_PLACEHOLDER = "registry image, e.g. docker://nvcr.io#nvidia/pytorch:24.05-py3"


def problem_html(message: str, hint: str = "") -> str:
    """A refusal or failure as the panel shows errors: the message, and how to fix it on a line of its own."""
    how = f"<br>How to fix: {html.escape(hint)}" if hint else ""
    return f'<div style="{ERROR_STYLE}">{html.escape(message)}{how}</div>'


def progress_bar(found: ImageImport) -> tuple[int, int, str] | None:
    """A running import's bar: its maximum, value and label; mksquashfs's percentage while it makes the image,
    else the layers fetched; None in the queue, while nothing is counted yet, and once ended."""
    progress = found.progress
    if found.state != "importing":
        return None
    if progress.phase == "squashfs" and progress.percent >= 0:
        return 100, progress.percent, "squashfs"
    if progress.layers_total:
        return progress.layers_total, min(progress.layers_done, progress.layers_total), "layers"
    return None


class ImageImportBox(w.VBox):  # type: ignore[misc]  # ipywidgets is untyped: its classes are Any to mypy
    """URI, optional name, Import; then the import's status line, its layers, and Cancel while it runs."""

    def __init__(
        self,
        imports: ImageImports,
        on_imported: Callable[[ImageImport], Awaitable[None]],
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self.imports = imports
        self.on_imported = on_imported
        self.spawn = spawn  # runs a coroutine as a task on the kernel's loop (the panel keeps its tasks)
        self.current: ImageImport | None = None
        self.uri = w.Text(placeholder=URI_PLACEHOLDER, layout=w.Layout(width="55%"))
        self.name = w.Text(placeholder="name (optional: made from the URI)", layout=w.Layout(width="25%"))
        self.import_button = w.Button(description="Import", icon="download", tooltip="Import it as a Slurm job")
        self.cancel_button = w.Button(
            description="Cancel", icon="times", button_style="danger", layout=w.Layout(display="none")
        )
        self.status = w.HTML()
        self.progress = w.IntProgress(0, min=0, max=1, description="layers", layout=w.Layout(display="none"))
        self.import_button.on_click(lambda _: self.spawn(self.start()))
        self.cancel_button.on_click(lambda _: self.spawn(self.cancel()))
        fields = w.HBox([self.uri, self.name, self.import_button, self.cancel_button])
        super().__init__([fields, self.status, self.progress])

    async def start(self) -> ImageImport | None:
        """Start importing what the fields name, then follow the import to its end (or join the import of that
        URI that runs already); None where it was refused, the reason shown."""
        try:
            found, _new = await self.imports.start(self.uri.value.strip(), self.name.value.strip())
        except AsgardError as error:
            self.status.value = problem_html(f"Not imported: {error.message}", error.hint)
            return None
        return await self.follow(found)

    async def follow(self, found: ImageImport) -> ImageImport:
        """Show the import as it goes until it has ended; once imported, tell on_imported."""
        self.current = found
        self._running(True)
        ended = asyncio.ensure_future(self.imports.wait(found.id))
        try:
            while not ended.done():
                self._show(found)
                await asyncio.wait({ended}, timeout=UPDATE_SECONDS)
            found = ended.result()
        finally:
            ended.cancel()
            self._running(False)
        self._show(found)
        if found.state == "imported":
            await self.on_imported(found)
        return found

    async def cancel(self) -> None:
        """Cancel the import shown; its follower shows it cancelled. A refusal (it ended meanwhile) is shown."""
        if self.current is None:
            return
        self.cancel_button.disabled = True
        try:
            await self.imports.cancel(self.current.id)
        except AsgardError as error:
            self.status.value = problem_html(error.message, error.hint)

    def _running(self, running: bool) -> None:
        self.import_button.disabled = running
        self.cancel_button.disabled = False
        self.cancel_button.layout.display = "" if running else "none"

    def _show(self, found: ImageImport) -> None:
        if found.state == "failed":
            self.status.value = problem_html(f"Not imported: {found.message or found.status()}", found.hint)
        else:
            self.status.value = f"<small>{html.escape(found.uri)}: {html.escape(found.status())}</small>"
        bar = progress_bar(found)
        self.progress.layout.display = "none" if bar is None else ""
        if bar is not None:
            self.progress.max, self.progress.value, self.progress.description = bar
