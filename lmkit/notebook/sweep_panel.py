"""What ``%%lmsweep`` shows: a live leaderboard of the sweep's trials, then its charts.

The leaderboard is one display updated in place (IPython's display handles; no widget library),
so a saved notebook keeps its final state as HTML and a terminal gets text. It only renders the
sweep's events: the trial running now, the finished ones best first, the pruned ones marked.

>>> board = TrialBoard("val_loss", 6)                 # doctest: +SKIP
>>> lmkit.sweep(cfg, space, trials=6, out="s", reporters=[board])   # doctest: +SKIP
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["TrialBoard", "split_cell"]

#: the line of a ``%%lmsweep`` cell after which its search space follows
SPACE_HEADER = "[space]"


def split_cell(cell: str) -> tuple[str, str | None]:
    """A ``%%lmsweep`` cell's config and its space (the TOML after a ``[space]`` line, whose
    ``[model]`` table is the space's), or None without one.

    >>> split_cell('arch = "lstm"\\n[space]\\nlayers = [1, 2]')
    ('arch = "lstm"\\n', 'layers = [1, 2]')
    """
    lines = cell.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == SPACE_HEADER:
            return "".join(lines[:i]), "".join(lines[i + 1:])
    return cell, None


def _values(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class TrialBoard:
    """The sweep's leaderboard: best so far, the running trial, pruned ones; updated in place."""

    def __init__(self, metric: str, total: int) -> None:
        self.metric, self.total = metric, total
        self.direction = "minimize"  # until the first trial's end says the sweep's
        self.running: dict[int, dict[str, Any]] = {}
        self.ended: dict[int, Any] = {}
        self._handle: Any = None

    def show(self) -> None:
        from IPython.display import display

        self._handle = display(self, display_id=True)

    def __call__(self, event: Any) -> None:
        from lmkit.api import TrialEndEvent, TrialStartEvent

        if isinstance(event, TrialStartEvent):
            self.running[event.number] = event.params
        elif isinstance(event, TrialEndEvent):
            self.running.pop(event.trial.number, None)
            self.ended[event.trial.number] = event.trial
            self.direction = event.direction
        else:
            return
        if self._handle is not None:
            self._handle.update(self)

    def _ranked(self) -> list[Any]:
        sign = 1 if self.direction == "minimize" else -1
        return sorted(self.ended.values(),
                      key=lambda t: (t.state != "complete", t.value is None, sign * (t.value or 0)))

    def headline(self) -> str:
        done = len(self.ended)
        pruned = sum(t.state == "pruned" for t in self.ended.values())
        ranked = [t for t in self._ranked() if t.state == "complete" and t.value is not None]
        best = (f"best {self.metric} {ranked[0].value:.4f} (trial {ranked[0].number})" if ranked
                else "no trial finished yet")
        return f"sweep: {done}/{self.total} trials ended here, {pruned} pruned; {best}"

    def __repr__(self) -> str:
        lines = [self.headline()]
        lines += [f"  trial {n} running: {_values(p)}" for n, p in self.running.items()]
        lines += [f"  trial {t.number} {t.state}: {self.metric} "
                  f"{'?' if t.value is None else f'{t.value:.4f}'}  {_values(t.params)}"
                  for t in self._ranked()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [f"<tr style='font-style:italic'><td>{n}</td><td>running…</td><td></td>"
                f"<td>{html.escape(_values(p))}</td></tr>" for n, p in self.running.items()]
        for i, t in enumerate(self._ranked()):
            # pruned/failed rows greyed, no further: at 0.6 the light theme's text falls to 4.2:1
            look = (" style='font-weight:bold'" if i == 0 and t.state == "complete"
                    else " style='opacity:0.75'" if t.state != "complete" else "")
            value = "" if t.value is None else f"{t.value:.4f}"
            step = "" if t.step is None else f" @ step {t.step}"
            rows.append(f"<tr class='lmkit-trial-{t.state}'{look}><td>{t.number}</td>"
                        f"<td>{t.state}{step}</td><td>{value}</td>"
                        f"<td>{html.escape(_values(t.params))}</td></tr>")
        return (f"<div class='lmkit-sweep'><b>{html.escape(self.headline())}</b>"
                f"<table><tr><th>trial</th><th>state</th><th>{html.escape(self.metric)}</th>"
                f"<th>parameters</th></tr>{''.join(rows)}</table></div>")
