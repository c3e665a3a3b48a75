"""Widgets other than the dashboard keep their result in a saved notebook (issue 31, item 4).

A widget's output refers to a model in the kernel: reopened without it, JupyterLab shows "Error
displaying widget: model not found". The generated text and the evaluation table must survive as
an output of their own, which a notebook read from disk (no kernel) still holds.
"""

from __future__ import annotations

import pytest

WIDGET = "application/vnd.jupyter.widget-view+json"

SETUP = """
import numpy as np
import lmkit.evaluation.evaluator as evaluator
from lmkit.evaluation.result import EvalResult
from lmkit.notebook import EvalPanel, GenerateWidget

class Echo:
    def generate(self, prompt, **options):
        return " and so on"

def fake_evaluate(run, task, data, **options):  # a fixed score, no fine-tuning
    predictions, labels = np.array([0, 1, 0, 0]), np.array([0, 1, 1, 0])
    return EvalResult.build(task, task.eval_split, str(run), np.eye(2)[predictions], labels)

evaluator.evaluate = fake_evaluate
"""


def _static_outputs(cell) -> list[dict]:
    return [o.data for o in cell.outputs if "data" in o and WIDGET not in o.data]


@pytest.mark.slow
def test_generated_text_and_results_table_survive_in_the_saved_notebook(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (
        SETUP,
        'widget = GenerateWidget(Echo(), prompt="Once upon a time")\nwidget',
        "widget.generate();",
        "panel = EvalPanel()\npanel",
        'panel.run(runs=("scratch",), tasks=("glue/sst2",));',
    )]
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(nb, tmp_path / "saved.ipynb")
    saved = nbformat.read(tmp_path / "saved.ipynb", as_version=4)  # no kernel from here on

    generate_cell, panel_cell = saved.cells[1], saved.cells[3]
    assert any(WIDGET in o.get("data", {}) for o in generate_cell.outputs)  # the live controls
    [text] = _static_outputs(generate_cell)
    assert text["text/plain"] == "Once upon a time and so on"
    assert "<b>Once upon a time</b> and so on" in text["text/html"]

    [table] = _static_outputs(panel_cell)
    assert "scratch" in table["text/plain"] and "0.7500" in table["text/plain"]
    assert "lmkit-eval-table" in table["text/html"] and "lmkit-confusion" in table["text/html"]
