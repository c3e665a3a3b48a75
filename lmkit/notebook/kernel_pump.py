"""Let widget messages through while a cell keeps the kernel busy.

A Jupyter kernel reads its shell channel between cells only: while ``%%lmtrain`` runs, a click on
the dashboard's Stop button waits in a queue until training is over, which is too late. Training
calls its reporters between compiled steps, in the kernel's main thread; there, `WidgetPump.pump`
takes the messages waiting for the main shell, handles the widget (``comm_*``) ones at once and
keeps every other request (the next cell's ``execute_request``, ``kernel_info_request``, ...) to
hand back, in order, when the pump closes, so the kernel runs them after the current cell as usual.

While the pump is open, the kernel is busy with the cell, and says so: JupyterLab shows the state
of the last status message whatever request it answers, and requests on the control channel
(``create_subshell_request`` when the widget manager starts, ``debug_request``) end with an
"idle" of their own while the cell still runs, so the status bar read "Idle" through a whole
``%%lmtrain``. The pump says "busy" for the running cell as it opens (ipywidgets' request comes
as the front end sees the first widget, which may be before the pump opens) and after each such
"idle" while it is open.

The same idea as the ``jupyter-ui-poll`` package, adapted to ipykernel 7, where a shell-channel
thread forwards main-shell messages over an in-process socket (ipykernel 6: the shell stream
itself) to the main thread's event loop, which is blocked by the running cell.

>>> with WidgetPump.for_current_kernel() as pump:      # doctest: +SKIP
...     for step in range(1000):
...         work(step)
...         pump.pump()        # a Button's on_click runs here
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WidgetPump"]

_WIDGET_MESSAGES = frozenset({"comm_open", "comm_msg", "comm_close"})


class WidgetPump:
    """Process pending widget messages of the running kernel; see the module docstring.

    `pump()` is throttled to `interval` seconds, so calling it after every step costs nothing.
    Outside a kernel (terminal IPython, plain Python) `for_current_kernel()` returns a pump whose
    `pump()` does nothing.
    """

    def __init__(self, kernel: Any, stream: Any, interval: float = 0.2) -> None:
        self._kernel = kernel
        self._stream = stream
        self._interval = interval
        self._last = 0.0
        self._held: list[Any] = []
        self._original: Callable[[Any], Any] | None = None
        self._copy = False
        self._cell: dict[str, Any] | None = None
        self._outer_status: Callable[..., None] | None = None

    @classmethod
    def for_current_kernel(cls, interval: float = 0.2) -> "WidgetPump":
        """A pump for the kernel this code runs in (inert when there is none)."""
        kernel = _current_kernel()
        return cls(kernel, _main_shell_stream(kernel) if kernel is not None else None, interval)

    @property
    def active(self) -> bool:
        """Whether this pump can deliver messages (a kernel with a known shell stream)."""
        return self._stream is not None

    def __enter__(self) -> "WidgetPump":
        if self.active:
            self._original = self._stream._recv_callback
            self._copy = self._stream._recv_copy
            self._stream.on_recv(self._receive, copy=False)
            self._cell = self._kernel.get_parent("shell")
            self._outer_status = vars(self._kernel).get("_publish_status")  # a pump around this one
            self._kernel._publish_status = self._publish_status
            type(self._kernel)._publish_status(self._kernel, "busy", "shell", self._cell)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.active or self._original is None:
            return
        self._stream.on_recv(self._original, copy=self._copy)
        if self._outer_status is None:
            del self._kernel._publish_status  # the class's method again
        else:
            self._kernel._publish_status = self._outer_status
        held, self._held = self._held, []
        # Hand the held requests to the kernel's own handler; they queue behind the running cell
        # (ipykernel serializes execution with a lock), in the order they arrived.
        for message in held:
            result = self._original(message)
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)
        self._original = None

    def pump(self, force: bool = False) -> None:
        """Handle waiting widget messages (at most every `interval` seconds unless `force`)."""
        if self._original is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        self._stream.flush(_POLLIN)

    def _publish_status(self, status: str, channel: str, parent: Any = None) -> None:
        """The kernel's `_publish_status`, then "busy" for the cell after another request's
        "idle" (runs in the thread of that request: the control channel's)."""
        kernel = self._kernel
        type(kernel)._publish_status(kernel, status, channel, parent)
        answered = parent or kernel.get_parent(channel)
        if status == "idle" and self._cell and _msg_id(answered) != _msg_id(self._cell):
            type(kernel)._publish_status(kernel, "busy", "shell", self._cell)

    def _receive(self, frames: list[Any]) -> None:
        kernel = self._kernel
        try:
            idents, parts = kernel.session.feed_identities(frames, copy=False)
            header = kernel.session.deserialize(parts, content=False, copy=False)["header"]
        except Exception:  # not ours to judge: let the kernel report a malformed message
            self._held.append(frames)
            return
        if header.get("msg_type") not in _WIDGET_MESSAGES:
            self._held.append(frames)
            return
        message = kernel.session.deserialize(parts, content=True, copy=False)
        handler = kernel.shell_handlers.get(header["msg_type"])
        if handler is None:
            return
        # Output of widget callbacks belongs to the widget message, not to the running cell:
        # switch the parent as ipykernel does for a message, and switch back afterwards.
        parent, ident = kernel.get_parent("shell"), kernel._parent_ident["shell"]
        kernel.set_parent(idents, message, channel="shell")
        try:
            handler(self._stream, idents, message)
        finally:
            kernel.set_parent(ident, parent, channel="shell")


_POLLIN = 1  # zmq.POLLIN, without importing zmq outside a kernel


def _msg_id(message: Any) -> Any:
    return (message or {}).get("header", {}).get("msg_id")


def _current_kernel() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None or not hasattr(kernel, "shell_handlers") or kernel.session is None:
        return None
    return kernel


def _main_shell_stream(kernel: Any) -> Any:
    """The ZMQStream on which the main thread receives its shell messages."""
    thread = getattr(kernel, "shell_channel_thread", None)
    if thread is not None and getattr(kernel, "_supports_kernel_subshells", False):
        return thread.manager.get_shell_channel_to_subshell_pair(None).to_stream  # ipykernel 7
    return getattr(kernel, "shell_stream", None)  # ipykernel 6: messages arrive on the main loop
