"""One Hugging Face weight table per architecture serves loading and export: a checkpoint that
`transformers` made loads into lmkit and exports back to the same tensors, names and values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hf_checkpoints import bert_folder, gpt2_folder

import lmkit

SST2 = Path(__file__).parent / "fixtures" / "eval" / "glue" / "SST-2"


def _tensors(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_a_transformers_gpt2_loads_and_exports_back_to_the_same_weights(tmp_path: Path) -> None:
    folder = gpt2_folder(tmp_path / "tiny-gpt2")
    out = lmkit.export(lmkit.from_pretrained(folder), tmp_path / "exported")
    original, exported = _tensors(folder), _tensors(out)
    assert sorted(exported) == sorted(original)
    for name, value in original.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)


@pytest.mark.slow
def test_a_transformers_bert_loads_and_exports_back_to_the_same_encoder_weights(tmp_path: Path) -> None:
    folder = bert_folder(tmp_path / "tiny-bert")
    # an untrained head (max_steps=0): the encoder is the checkpoint's, as loaded
    result = lmkit.evaluate(folder, task="glue/sst2", data=SST2, max_steps=0)
    out = lmkit.export(result, tmp_path / "exported")
    original, exported = _tensors(folder), _tensors(out)
    # BertModel's own pooler is not read (lmkit pools [CLS] itself); export writes one that
    # passes the [CLS] state through (lmkit.exporters.hf)
    encoder = {name: value for name, value in original.items() if not name.startswith("pooler.")}
    assert {"pooler.dense.weight", "pooler.dense.bias"} <= set(original)
    assert sorted(f"bert.{name}" for name in encoder) == sorted(
        name for name in exported if name.startswith("bert.") and not name.startswith("bert.pooler."))
    for name, value in encoder.items():
        np.testing.assert_array_equal(exported[f"bert.{name}"], value, err_msg=name)
