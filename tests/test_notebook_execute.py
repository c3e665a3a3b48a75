"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel (nbclient)."""

from __future__ import annotations

from pathlib import Path

from typing import Any

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"


def _execute(name: str, steps: int, workdir: Path) -> Any:
    import nbformat  # imported here: nbformat takes seconds to import, and these tests are slow
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:  # papermill-style: the cell tagged "parameters" sets the budget
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = f"steps = {steps}"
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    nbformat.write(nb, workdir / name)
    return nb


def _train_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%%lmtrain")]


def _text(cell: Any) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def test_shipped_notebooks_are_clean_and_need_no_checkout():
    # outputs saved in them dirty a checkout on every run; tests/fixtures exists only in a checkout
    import json

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(not c["outputs"] and c["execution_count"] is None for c in code), path.name
        assert not any("fixtures" in "".join(c["source"]) for c in cells), path.name


def test_every_notebook_is_executed_by_some_test():
    tests = [p.read_text(encoding="utf-8") for p in Path(__file__).parent.glob("test_*.py")]
    untested = [nb.name for nb in NOTEBOOKS.glob("*.ipynb") if not any(nb.name in t for t in tests)]
    assert untested == []


@pytest.mark.slow
def test_quickstart_notebook(tmp_path):
    nb = _execute("01_quickstart.ipynb", steps=20, workdir=tmp_path)
    cells = _train_cells(nb)
    assert len(cells) == 2
    for cell in cells:
        # the dashboard ended as a picture (no widget to break in a saved notebook), then the
        # hint and sample as text
        picture, sample = [o for o in cell.outputs if o.output_type == "display_data"]
        assert WIDGET not in picture.data and "text/html" not in picture.data
        assert picture.data["image/svg+xml"].startswith("<svg") and picture.data["image/png"]
        assert picture.data["text/plain"].startswith("lmkit: training completed at step 20")
        assert "sample:\n" in sample.data["text/plain"]
    assert (tmp_path / "runs" / "quickstart-lstm" / "model.keras").is_file()
    text = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "lstm  val_loss" in text and "gpt   val_loss" in text
    assert "history rows; ended: completed" in text


@pytest.mark.slow
def test_registry_and_plugins_notebook(tmp_path):
    nb = _execute("02_registry_and_plugins.ipynb", steps=20, workdir=tmp_path)
    text = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "unknown architecture 'bigramm' (did you mean 'bigram'" in text
    (cell,) = _train_cells(nb)
    picture = [o for o in cell.outputs if o.output_type == "display_data"][0]
    assert "lmkit · bigram · completed at step 20" in picture.data["image/svg+xml"]
    assert (tmp_path / "runs" / "plugin-bigram" / "summary.json").is_file()
