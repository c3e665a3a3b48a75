"""Which progress display %%lmtrain picks: dashboard in kernels, text elsewhere."""

from __future__ import annotations

import sys

import pytest

from lmkit.notebook import progress
from lmkit.engine.events import StopSignal


def test_outside_a_kernel_training_uses_its_text_progress():
    with progress.training_reporters(StopSignal()) as reporters:
        assert reporters is None


def test_without_ipywidgets_one_warning_then_text(monkeypatch):
    monkeypatch.setattr(progress, "in_kernel", lambda: True)
    monkeypatch.setattr(progress, "_warned_no_widgets", False)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets -> ImportError
    monkeypatch.delitem(sys.modules, "lmkit.notebook.dashboard", raising=False)
    with pytest.warns(UserWarning, match="ipywidgets is not available.*text progress"):
        with progress.training_reporters(StopSignal()) as reporters:
            assert reporters is None
    with progress.training_reporters(StopSignal()) as reporters:  # no second warning
        assert reporters is None


def test_lmkit_progress_text_forces_text(monkeypatch):
    monkeypatch.setenv("LMKIT_PROGRESS", "text")
    assert not progress.in_kernel()
