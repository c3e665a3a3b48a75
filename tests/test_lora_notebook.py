"""notebooks/06_lora.ipynb runs top to bottom in a real kernel with a small budget: a tiny
`transformers`-made Llama adapted with LoRA, its adapter loaded by `peft` with lmkit's logits,
and merged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_lora_notebook(tmp_path: Path) -> None:
    import nbformat  # imported here: nbformat takes seconds to import, and this test is slow
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "06_lora.ipynb", as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = "steps = 6"
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "'adapter_config.json', 'adapter_model.safetensors'" in text
    differences = [float(x) for x in re.findall(r"largest difference of the logits, [^:]+: (\S+)", text)]
    assert len(differences) == 2 and max(differences) < 1e-4
    assert (tmp_path / "exported" / "tiny-llama-merged" / "config.json").is_file()
