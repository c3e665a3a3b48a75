"""Hostile or damaged Hugging Face checkpoint folders (issue 30): each is one clear `RunError`
naming the file, key or tensor, or loads as `transformers` reads it; nothing is read from outside
the folder and nothing absurd is allocated."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hf_checkpoints import TEXT, bert_folder

import lmkit
from lmkit.errors import RunError


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bert_folder(tmp_path_factory.mktemp("bert"))


@pytest.fixture
def bert(tmp_path: Path, bert_dir: Path) -> Path:
    """A copy of the tiny BERT folder to damage."""
    return Path(shutil.copytree(bert_dir, tmp_path / "bert"))


def _edit_config(folder: Path, **changes: Any) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del config[key]
    (folder / "config.json").write_text(json.dumps(config))


def _edit_weights(folder: Path, edit: Any) -> None:
    from safetensors.numpy import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    edit(weights)
    save_file(weights, folder / "model.safetensors")


@pytest.mark.parametrize("shard", ["/etc/hostname", "../outside.safetensors", "sub/../../x"])
def test_an_index_naming_a_file_outside_the_folder_is_refused(bert: Path, shard: str) -> None:
    (bert.parent / "outside.safetensors").write_bytes((bert / "model.safetensors").read_bytes())
    (bert / "model.safetensors").rename(bert / "model-00001-of-00001.safetensors")
    names = json.loads(json.dumps(list(_tensor_names(bert / "model-00001-of-00001.safetensors"))))
    weight_map = {n: "model-00001-of-00001.safetensors" for n in names}
    weight_map[names[0]] = shard
    (bert / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(RunError, match=r"shards must be files of the checkpoint folder.*" + re.escape(shard)):
        lmkit.from_pretrained(bert)


def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return list(f.keys())


@pytest.mark.parametrize("damage, message", [
    (lambda w: w["encoder.layer.0.output.dense.weight"].__setitem__((0, 0), np.nan),
     r"'encoder.layer.0.output.dense.weight'.* 1 NaN or infinite values"),
    (lambda w: w["embeddings.LayerNorm.weight"].__setitem__(slice(None), np.inf),
     r"'embeddings.LayerNorm.weight'.* NaN or infinite"),
    (lambda w: w.update({"embeddings.word_embeddings.weight":
                         w["embeddings.word_embeddings.weight"].astype(np.int8)}),
     r"'embeddings.word_embeddings.weight'.* stored as int8"),
    (lambda w: w.__setitem__("embeddings.LayerNorm.bias", w["embeddings.LayerNorm.bias"] > 0),
     r"'embeddings.LayerNorm.bias'.* stored as bool"),
], ids=["nan", "inf", "int8", "bool"])
def test_weights_that_are_not_finite_floats_are_refused(bert: Path, damage: Any, message: str) -> None:
    _edit_weights(bert, damage)
    with pytest.raises(RunError, match=message):
        lmkit.from_pretrained(bert)


@pytest.mark.parametrize("changes, message", [
    ({"layer_norm_eps": float("nan")}, r"layer_norm_eps must be a finite positive number.*nan"),
    ({"layer_norm_eps": -1}, r"layer_norm_eps must be a finite positive"),
    ({"hidden_size": None}, r"has no 'hidden_size', which a bert checkpoint needs"),
    ({"hidden_size": "32"}, r"hidden_size must be a positive integer, got '32'"),
    ({"num_hidden_layers": 0}, r"num_hidden_layers must be a positive integer, got 0"),
    ({"hidden_dropout_prob": 1.5}, r"hidden_dropout_prob must be a number in \[0, 1\)"),
    ({"vocab_size": 10**12}, r"about [\d,]+ parameters .* GiB in float32\), more than"),
    ({"max_position_embeddings": 10**7},
     r"describes a model of about [\d,]+ parameters but the folder's weights hold"),
    ({"num_hidden_layers": 100_000}, r"describes a model of about"),
], ids=["eps-nan", "eps-negative", "no-hidden", "hidden-str", "no-layers", "dropout", "vocab-1e12",
        "positions-1e7", "layers-1e5"])
def test_a_damaged_config_is_refused_before_allocating(bert: Path, changes: dict[str, Any],
                                                       message: str) -> None:
    _edit_config(bert, **changes)
    start = time.monotonic()
    with pytest.raises(RunError, match=message):
        lmkit.from_pretrained(bert)
    assert time.monotonic() - start < 30  # refused, not allocated


def test_a_tokenizer_with_ids_past_the_embedding_is_refused(bert: Path) -> None:
    tok = json.loads((bert / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    word = next(w for w in vocab if not w.startswith("["))
    vocab[word] = 10_000  # same number of tokens, one id far past the 120 embedding rows
    (bert / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(RunError, match=r"ids go up to 10000"):
        lmkit.from_pretrained(bert)


@pytest.mark.slow
def test_an_untied_gpt2_head_is_loaded_as_transformers_reads_it(tmp_path: Path) -> None:
    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(TEXT, vocab_size=300, show_progress=False)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=32, n_embd=16,
                                     n_layer=1, n_head=2, tie_word_embeddings=False)
    reference = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        reference.lm_head.weight.normal_(0, 1.0)  # far from the embedding: a tied load differs
    reference.save_pretrained(tmp_path, safe_serialization=True)
    tok.save(str(tmp_path / "tokenizer.json"))

    model = lmkit.from_pretrained(tmp_path)
    ids = model.tokenizer.encode("the cat sat on the mat")
    with torch.no_grad():
        want = reference(torch.tensor([ids])).logits.numpy()[0]
    np.testing.assert_allclose(model.logits(["the cat sat on the mat"])[0, :len(ids)], want,
                               atol=1e-4)


def test_init_from_a_folder_describing_a_huge_vocabulary_is_refused_before_allocating(tmp_path: Path) -> None:
    from hf_checkpoints import gpt2_folder

    folder = gpt2_folder(tmp_path / "gpt2")
    _edit_config(folder, vocab_size=10**12)
    corpus = Path(__file__).parent / "fixtures" / "core" / "shakespeare_30k.txt"
    start = time.monotonic()
    with pytest.raises(RunError, match=r"describes a model of about [\d,]+ parameters"):
        lmkit.train(init=str(folder), data=str(corpus), max_steps=1, out=str(tmp_path / "run"),
                    reporters=[])
    assert time.monotonic() - start < 30
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("missing", ["n_positions", "n_embd"])
def test_a_gpt2_config_without_a_size_names_it(tmp_path: Path, missing: str) -> None:
    from hf_checkpoints import gpt2_folder

    folder = gpt2_folder(tmp_path / "gpt2")
    _edit_config(folder, **{missing: None})
    with pytest.raises(RunError, match=rf"has no '{missing}', which a gpt2 checkpoint needs"):
        lmkit.from_pretrained(folder)


def test_an_architecture_whose_mapping_misses_a_weight_is_refused(
        bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A weight no checkpoint tensor is read into would stay zero (the build draws nothing for
    a checkpoint): an architecture whose `hf_weights` forgets one is an error naming it."""
    from lmkit.models.bert import BERT

    every = BERT.hf_weights
    monkeypatch.setattr(BERT, "hf_weights", lambda self: every(self)[1:])  # the embedding's gone
    with pytest.raises(RunError, match=r"names no checkpoint tensor for bert(_\d+)?/embedding:"):
        lmkit.from_pretrained(bert)
