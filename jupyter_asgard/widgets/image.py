"""Image choice: the site's squashfs images by name, tag and size, or free entry of a path or enroot URI."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w


def image_label(image: dict[str, Any]) -> str:
    """How an image reads in the list: name:tag, size, date (registry images have neither)."""
    if image["kind"] == "registry":
        return f"{image['display']} (registry)"
    date = (image.get("modified") or "")[:10]
    return f"{image['display']} · {image['size_text']} · {date}"


class ImagePicker(w.VBox):  # type: ignore[misc]  # ipywidgets is untyped: its classes are Any to mypy
    """A combobox: choose a listed image, or type /path/to/image.sqsh or docker://REGISTRY#IMAGE:TAG."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.by_label: dict[str, str] = {}
        self.choice = w.Combobox(
            placeholder="choose an image, or type /path/image.sqsh or docker://nvcr.io#nvidia/pytorch:24.05-py3",
            ensure_option=False,
            layout=w.Layout(width="100%"),
        )
        self.details = w.HTML()

        def changed(_: Any) -> None:
            self._describe()
            on_change()

        self.choice.observe(changed, "value")
        super().__init__([self.choice, self.details])

    @property
    def value(self) -> str:
        """What goes to --container-image: a listed image's path or URI, else the text as typed."""
        text: str = self.choice.value.strip()
        return self.by_label.get(text, text)

    @value.setter
    def value(self, image: str) -> None:
        label = next((label for label, value in self.by_label.items() if value == image), image)
        self.choice.value = label

    def set_images(self, images: list[dict[str, Any]]) -> None:
        current = self.value
        self.by_label = {image_label(image): image["path"] or image["uri"] for image in images}
        self.choice.options = tuple(self.by_label)
        self.value = current

    def _describe(self) -> None:
        image = self.value
        if not image:
            self.details.value = "<small>No image chosen yet.</small>"
        elif image.startswith(("/", ".")):
            self.details.value = f"<small>squashfs file <code>{html.escape(image)}</code></small>"
        else:
            self.details.value = (
                f"<small>registry image <code>{html.escape(image)}</code>, imported on the node at start</small>"
            )
