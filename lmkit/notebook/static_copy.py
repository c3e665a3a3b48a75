"""What a widget shows (generated text, a results table) kept as a cell output of its own.

A widget's cell output refers to a model that lives in the kernel: reopened after the kernel is
gone, JupyterLab shows "Error displaying widget: model not found" in its place. So the result of
a widget (not its controls) goes to a plain HTML + text output below it, updated in place through
a display handle; a saved notebook keeps that output whatever became of the widget.

>>> copy = StaticCopy()                                   # doctest: +SKIP
>>> copy.show(widget, hide=[widget.output])               # doctest: +SKIP
>>> copy.update("<pre>text</pre>", "text")                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["StaticCopy"]


class StaticCopy:
    """A cell output below a widget holding a static copy of its result (see the module)."""

    def __init__(self) -> None:
        self._handle: Any = None
        self.bundle: dict[str, str] = {"text/plain": ""}

    def show(self, widget: Any, hide: Sequence[Any] = ()) -> None:
        """Display `widget`, then this copy below it; the widgets in `hide` (the widget's own
        view of its result) are hidden, since the copy shows the same thing."""
        from IPython.display import display

        for part in hide:
            part.layout.display = "none"
        display(widget._repr_mimebundle_(), raw=True)
        self._handle = display(self.bundle, raw=True, display_id=True)

    def update(self, html_text: str, plain: str) -> None:
        """Replace the copy's content: `html_text` for a page, `plain` for a terminal or a
        notebook opened untrusted."""
        self.bundle = {"text/plain": plain, "text/html": html_text}
        if self._handle is not None:
            self._handle.update(self.bundle, raw=True)
