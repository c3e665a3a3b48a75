"""The `llama` architecture: Llama, Mistral and Qwen2 checkpoints that `transformers` makes here
(tiny, random, float32) give its logits, continue greedily as it does (with and without the KV
cache), continue training (`init=`) and export back to folders it reloads."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hf_checkpoints import decoder_folder

import lmkit
from lmkit.errors import ConfigError, ExportError, RunError

ROOT = Path(__file__).resolve().parent.parent
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8}
#: (model_type, config fields): GQA, untied and tied heads, each rope scaling, biases, windows
CASES = {
    "llama-gqa-biases": ("llama", dict(num_key_value_heads=2, attention_bias=True, mlp_bias=True)),
    "llama-tied-mqa": ("llama", dict(num_key_value_heads=1, tie_word_embeddings=True)),
    "llama-linear": ("llama", dict(rope_scaling={"rope_type": "linear", "factor": 2.0})),
    # 40 tokens past 8 positions: dynamic NTK changes the frequencies
    "llama-dynamic": ("llama", dict(rope_scaling={"rope_type": "dynamic", "factor": 4.0},
                                    max_position_embeddings=8)),
    "llama-llama3": ("llama", dict(rope_scaling=LLAMA3, rope_theta=500.0)),
    "mistral-window": ("mistral", dict(num_key_value_heads=2, sliding_window=6)),
    "qwen2-window-tied": ("qwen2", dict(num_key_value_heads=2, use_sliding_window=True,
                                        sliding_window=5, max_window_layers=1,
                                        tie_word_embeddings=True)),
}


def _reference(folder: Path):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype="float32").eval()


def _reference_logits(folder: Path, tokens: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return _reference(folder)(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: decoder_folder(tmp_path_factory.mktemp(name), model_type, **options)
            for name, (model_type, options) in CASES.items()}


@pytest.mark.slow
# -- parity with transformers ------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_transformers(folders: dict[str, Path], case: str) -> None:
    model = lmkit.from_pretrained(folders[case])
    assert model.arch == "llama" and model.model.hf_model_type == CASES[case][0]
    tokens = np.random.default_rng(0).integers(0, 300, (2, 40)).astype(np.int32)
    got = np.asarray(model.model(tokens))
    assert np.abs(got - _reference_logits(folders[case], tokens)).max() < 1e-4


@pytest.mark.slow
def test_the_reference_cases_differ_where_the_options_matter(folders: dict[str, Path]) -> None:
    """The cases above test something: without its window, scaling or biases lmkit's model
    no longer gives transformers' logits (so a model ignoring them would fail)."""
    tokens = np.random.default_rng(1).integers(0, 300, (1, 40)).astype(np.int32)
    for case, option, plain in (("mistral-window", "sliding_window", 0),
                                ("llama-dynamic", "rope_scaling", {}),
                                ("llama-llama3", "rope_scaling", {}),
                                ("qwen2-window-tied", "sliding_window", 0)):
        loaded = lmkit.from_pretrained(folders[case]).model
        accepted = inspect.signature(type(loaded)).parameters
        options = {k: v for k, v in loaded.get_config().items()
                   if k in accepted and k != "vocab_size"}
        changed = type(loaded)(loaded.vocab_size, **{**options, option: plain})
        changed(tokens)
        changed.set_weights(loaded.get_weights())
        want = _reference_logits(folders[case], tokens)
        assert np.abs(np.asarray(loaded(tokens)) - want).max() < 1e-4
        assert np.abs(np.asarray(changed(tokens)) - want).max() > 1e-3, case


@pytest.mark.slow
@pytest.mark.parametrize("case", ["llama-gqa-biases", "mistral-window", "qwen2-window-tied"])
def test_greedy_continuation_equals_transformers_with_and_without_the_cache(
        folders: dict[str, Path], case: str) -> None:
    import torch

    model = lmkit.from_pretrained(folders[case])
    prompt = "the quick brown fox"
    ids = model.tokenizer.encode(prompt)
    with torch.no_grad():
        out = _reference(folders[case]).generate(torch.tensor([ids]), max_new_tokens=20,
                                                 do_sample=False, pad_token_id=0)
    expected = model.tokenizer.decode(out[0, len(ids):].tolist())
    for use_cache in (True, False):
        assert model.generate(prompt, max_new_tokens=20, temperature=0,
                              use_cache=use_cache) == expected, use_cache


@pytest.mark.slow
def test_padded_text_batches_equal_transformers_row_by_row(folders: dict[str, Path]) -> None:
    folder = folders["llama-gqa-biases"]
    model = lmkit.from_pretrained(folder)
    texts = ["the cat sat on the mat", "first citizen: speak"]
    logits = model.logits(texts)
    tokens, lengths = model.encode(texts)
    for i, n in enumerate(lengths):
        want = _reference_logits(folder, tokens[i:i + 1, :n])[0]
        assert np.abs(logits[i, :n] - want).max() < 1e-4


@pytest.mark.slow
def test_sharded_checkpoints_load(tmp_path: Path) -> None:
    whole = decoder_folder(tmp_path / "whole", "llama", num_key_value_heads=2)
    shards = decoder_folder(tmp_path / "shards", "llama", num_key_value_heads=2,
                            max_shard_size="20KB")
    assert len(list(shards.glob("model-0000*.safetensors"))) > 1
    tokens = np.arange(12, dtype=np.int32)[None]
    np.testing.assert_array_equal(np.asarray(lmkit.from_pretrained(shards).model(tokens)),
                                  np.asarray(lmkit.from_pretrained(whole).model(tokens)))


@pytest.mark.slow
# -- export -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["llama-gqa-biases", "mistral-window", "qwen2-window-tied"])
def test_a_checkpoint_exports_back_to_the_same_tensors_and_class(
        folders: dict[str, Path], case: str, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    source = folders[case]
    out = lmkit.export(lmkit.from_pretrained(source), tmp_path / "exported")
    original, exported = (load_file(str(f / "model.safetensors")) for f in (source, out))
    assert sorted(exported) == sorted(original)
    for name, value in original.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [type(_reference(source)).__name__]
    assert type(_reference(out)).__name__ == config["architectures"][0]
    # transformers reads the exported config as the original: window, biases, tying
    tokens = np.random.default_rng(2).integers(0, 300, (1, 40)).astype(np.int32)
    np.testing.assert_array_equal(_reference_logits(out, tokens), _reference_logits(source, tokens))


def test_an_option_the_layout_cannot_hold_is_refused_before_loading_weights(tmp_path: Path) -> None:
    from lmkit.config import TrainConfig

    run = tmp_path / "run"
    run.mkdir()  # a config alone: the refusal comes before any weight is read
    config = TrainConfig(arch="llama", embed_dim=32, heads=4, layers=1,
                         model={"sliding_window": 4})  # llama's layout has no window
    (run / "config.toml").write_text(config.to_toml())
    with pytest.raises(ExportError, match=r"hf_model_type is 'llama'.*sliding_window=4.*"
                                          r"Set \[model\] hf_model_type"):
        lmkit.export(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# -- continued pretraining --------------------------------------------------------------------
@pytest.mark.slow
def test_training_continues_from_a_llama_checkpoint_and_exports(folders: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    import torch

    from lmkit.data.corpus import open_corpus
    from lmkit.data.tokens import WindowSampler, split, token_ids

    folder = folders["llama-gqa-biases"]
    corpus = tmp_path / "text.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log\n" * 200)
    run = lmkit.train(data=str(corpus), seq_len=32, batch_size=4, max_steps=12,
                      steps_per_dispatch=1, eval_every=6, eval_batches=2, warmup_steps=0,
                      learning_rate=1e-2, sample_tokens=5, seed=0, init=str(folder),
                      out=str(tmp_path / "run"), reporters=[])
    assert (run.config.arch, run.config.tokenizer) == ("llama", "pretrained")
    assert run.config.model["kv_heads"] == 2 and run.config.model["qkv_bias"] is True
    # step 1 starts from the checkpoint: its loss is transformers' loss on that batch
    ids = token_ids(open_corpus(str(corpus)), run.tokenizer)
    x, y = WindowSampler(split(ids, run.config.validation_split, 32)[0], 32, 4, 0).batch(0)
    logits = torch.tensor(_reference_logits(folder, x))
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             torch.tensor(y, dtype=torch.long).reshape(-1))
    losses = [r["loss"] for r in run.history if "loss" in r]
    assert losses[0] == pytest.approx(float(want), abs=1e-4)
    assert losses[-1] < losses[0] - 0.5
    again = lmkit.load(run.dir)  # model.keras round trip
    assert again.generate("the cat", max_new_tokens=6, temperature=0) == run.generate(
        "the cat", max_new_tokens=6, temperature=0)
    # the trained weights export to a folder transformers reads with the same logits
    out = lmkit.export(run.dir, tmp_path / "exported")
    tokens = np.asarray([ids[:32]], dtype=np.int32)
    assert np.abs(np.asarray(run.model(tokens)) - _reference_logits(out, tokens)).max() < 1e-4


@pytest.mark.slow
def test_model_parallel_training_equals_one_device(tmp_path: Path) -> None:
    from jax.sharding import PartitionSpec

    corpus = tmp_path / "text.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log\n" * 100)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "llama_parallel_child.py"),
                           str(corpus), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["mesh"] == "2 devices (data 1 x model 2), 1 process"
    assert result["w_q"] == str(PartitionSpec(None, "model"))  # by columns: whole heads
    assert result["w_down"] == str(PartitionSpec("model", None))  # by rows
    assert result["trained"] and result["loss_diff"] <= 1e-5, result


# -- bad input --------------------------------------------------------------------------------
def test_an_unsupported_model_type_lists_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma", "vocab_size": 10}))
    with pytest.raises(RunError, match=r"model_type 'gemma' is not supported; lmkit reads: "
                                       r"bert, gpt2, llama, mistral, qwen2"):
        lmkit.from_pretrained(tmp_path)


def test_what_the_model_cannot_compute_is_refused_by_name() -> None:
    from lmkit.models.llama import llama_options

    base = {"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32}
    with pytest.raises(RunError, match=r"rope_scaling type 'yarn' is not supported.*"
                                       r"default, linear, dynamic, llama3"):
        llama_options({**base, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(RunError, match=r"hidden_act='gelu'.*expected 'silu'"):
        llama_options({**base, "hidden_act": "gelu"})
    with pytest.raises(RunError, match="layer_types"):
        llama_options({**base, "model_type": "qwen2", "num_hidden_layers": 2,
                       "use_sliding_window": True, "sliding_window": 4,
                       "layer_types": ["sliding_attention", "full_attention"]})
    # transformers 5 spells scaling as rope_parameters, older configs as rope_scaling + type
    new = llama_options({**base, "rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                     "rope_theta": 500.0}})
    old = llama_options({**base, "rope_theta": 500.0, "rope_scaling": {"type": "linear",
                                                                        "factor": 2.0}})
    assert new == old and new["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}


def test_bad_options_name_the_argument() -> None:
    from lmkit.models.llama import Llama

    with pytest.raises(ConfigError, match=r"`heads` \(4\) must be a multiple of `kv_heads` \(3\)"):
        Llama(10, embed_dim=16, heads=4, kv_heads=3)
    with pytest.raises(ConfigError, match=r"rope_scaling.rope_type.*'yarn'"):
        Llama(10, embed_dim=16, heads=4, rope_scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ConfigError, match=r"`rope_scaling.factor` must be a number >= 1"):
        Llama(10, embed_dim=16, heads=4, rope_scaling={"rope_type": "linear"})
    with pytest.raises(ConfigError, match=r"`max_window_layers` must be an integer in \[0, 2\]"):
        Llama(10, embed_dim=16, heads=4, layers=2, sliding_window=4, max_window_layers=3)
    with pytest.raises(ConfigError, match=r"`head_dim` must be even, got 5"):
        Llama(10, embed_dim=20, heads=4)


def test_lmkit_list_architectures_shows_llama(capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    assert main(["list", "architectures"]) == 0
    assert "llama" in capsys.readouterr().out
