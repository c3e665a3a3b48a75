"""notebooks/05_translate.ipynb runs top to bottom in a real kernel with a small budget."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_translate_notebook(tmp_path: Path) -> None:
    import nbformat  # imported here: nbformat takes seconds to import, and this test is slow
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "05_translate.ipynb", as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    # the budgets shrink; the data path stays the notebook's own default (the kernel runs in tmp_path)
    kept = [line for line in params.source.splitlines() if line.startswith(("from ", "data = ", "gpt2_folder", "summar"))]
    params.source = "\n".join([*kept, "steps = 6", "seconds = 300", "score_every = 3"])
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "'bleu':" in text and "BLEU signature: nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in text
    assert "greedy BLEU" in text and "beam search (4) BLEU" in text
    train = next(c for c in nb.cells if c.cell_type == "code" and "training_reporters" in c.source
                 and "lmkit.evaluate" in c.source)
    # the finished dashboard: its picture, with the BLEU chart in place of perplexity
    svg = "".join(o.get("data", {}).get("image/svg+xml", "") for o in train.outputs)
    assert "bleu" in svg and "perplexity" not in svg
    showcase = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("result.showcase"))
    html = showcase.outputs[0]["data"]["text/html"]
    assert ">best<" in html and ">worst<" in html and ">random<" in html
