"""notebooks/04_pretrained.ipynb runs top to bottom in a real kernel with a small budget.

The checkpoint is the notebook's parameter: the test gives it a tiny BERT that `transformers`
makes (tests/hf_checkpoints.py), because compiling MiniLM's fine-tuning step for each padded
length takes longer than the notebook's whole test budget on this machine; the loading,
embedding, fine-tuning and panel code is the same for MiniLM (its parity and fine-tuning are
tested in test_pretrained.py and test_pretrained_finetune.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hf_checkpoints import bert_folder

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"


def _text(cell) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell.outputs)


@pytest.mark.slow
def test_pretrained_notebook(tmp_path: Path) -> None:
    import nbformat  # imported here: nbformat takes seconds to import, and this test is slow
    from nbclient import NotebookClient

    checkpoint = bert_folder(tmp_path / "tiny-bert")
    nb = nbformat.read(ROOT / "notebooks" / "04_pretrained.ipynb", as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    # the budgets shrink; the data path stays the notebook's own default, which must hold from
    # another working directory (the kernel runs in tmp_path)
    data_line = next(line for line in params.source.splitlines() if line.startswith("data = "))
    params.source = (f"from pathlib import Path\ncheckpoint = {str(checkpoint)!r}\nsteps = 4\n"
                     f"lm_steps = 4\nmax_length = 32\n{data_line}")
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "".join(_text(c) for c in code)

    # embeddings: a similarity table and each sentence's nearest other sentence
    assert "Pretrained(name=" in text and "arch='bert'" in text
    assert text.count("closest: ") == 5
    # fine-tuning through %lmeval showed the dashboard, then bound the result
    lmeval = next(c for c in code if c.source.startswith("%lmeval mini"))
    assert any(WIDGET in o.get("data", {}) or "image/svg+xml" in o.get("data", {}) for o in lmeval.outputs)
    assert "EvalResult(task='glue/sst2', split='dev', model='mini', accuracy=" in text
    imdb = next(c for c in code if c.source.startswith("%lmeval mini --task imdb"))
    assert any(WIDGET in o.get("data", {}) or "image/svg+xml" in o.get("data", {}) for o in imdb.outputs)
    assert "EvalResult(task='imdb', split='test', model='mini', accuracy=" in text
    # the panel compared the checkpoint with a scratch model on both tasks; the checkpoint's
    # rows are section 2's results (not fine-tuned again), the scratch model's its own
    panel = next(c for c in code if "EvalPanel(" in c.source)
    assert any(WIDGET in o.get("data", {}) for o in panel.outputs)
    html = next(c for c in code if c.source.startswith("table =")).outputs[0]["data"]["text/html"]
    assert html.count("glue/sst2") == 2 and html.count("imdb") == 2 and ">scratch<" in html
    assert ">mini<" in html
    assert "MiniLM's rows are section 2's scores: True" in text
    sst2 = re.search(r"EvalResult\(task='glue/sst2', split='dev', model='mini', accuracy=([\d.]+)", text)
    compared = re.search(r"glue/sst2: MiniLM ([\d.]+), scratch ", text)
    assert abs(float(compared.group(1)) - float(sst2.group(1))) <= 6e-4  # 3 and 4 decimals shown
    # GPT-2: a transformers-made checkpoint, continued on Tiny Shakespeare with its own tokenizer
    assert "arch='gpt2'" in text and "gpt2 pretrained from gpt2-tiny" in text
    summary = json.loads((tmp_path / "runs" / "gpt2-shakespeare" / "summary.json").read_text())
    assert summary["steps"] == 4
    assert (tmp_path / "gpt2-tiny" / "model.safetensors").is_file()
