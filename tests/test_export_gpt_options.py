"""`lmkit export` of a `gpt` with options GPT-2 does not compute (the default run: rotary, relu²,
qk_norm, a head bias): a folder with lmkit's modeling code that `transformers` loads with
``trust_remote_code=True`` and that gives lmkit's logits and greedy text (issue 31, item 10)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import lmkit
from lmkit.api import needs_remote_code
from lmkit.cli import main
from test_export import TINY, SHAKESPEARE, UNSEEN, assert_same_ids, make_run

REMOTE_FILES = ["configuration_lmkit_gpt.py", "modeling_lmkit_gpt.py"]


@pytest.fixture
def hf_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """transformers copies remote code into its modules cache: keep it in the test's folder."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(sys, "path", list(sys.path))  # it appends the cache to sys.path
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    return tmp_path / "hf-modules"


def scaled_run(tmp: Path, **options: object):
    """`make_run` with every norm's scale around 1 (RMSNorm's weight is `scale`, not `gamma`)."""
    run = make_run(tmp, **options)
    for w in run.model.weights:
        if w.path.endswith("/scale"):
            w.assign(np.asarray(w) + 1.0)
    return run


def load(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()


def assert_same_function(run, folder: Path, prompt: str = "ROMEO:\nWhat") -> None:
    """transformers' logits within 1e-4 of lmkit's on a full window; the same greedy text."""
    import torch

    model = load(folder)
    ids = run.tokenizer.encode(SHAKESPEARE[30_000:30_000 + 200])[:TINY["seq_len"]]
    ours = np.asarray(run.model(np.array([ids], dtype="int32")))
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits.numpy()
    assert np.abs(ours - theirs).max() < 1e-4
    assert ours.std() > 0.3  # confident, varied predictions: a comparison that can fail
    text = run.generate(prompt, max_new_tokens=12, temperature=0)
    prompt_ids = run.tokenizer.encode(prompt)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=12)
    assert run.tokenizer.decode(out[0, len(prompt_ids):].tolist()) == text


@pytest.mark.slow
def test_the_default_run_exports_and_transformers_computes_it(
        tmp_path: Path, hf_modules: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.api import resolved_train_config

    defaults = resolved_train_config().model  # gpt's recipe: rotary, relu2, qk_norm, zero_init
    assert {"rotary", "qk_norm", "mlp", "zero_init"} <= set(defaults)
    run = scaled_run(tmp_path / "run", **defaults)  # and the head bias, on by default
    out = tmp_path / "hf"
    assert main(["export", str(run.dir), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"from_pretrained('{out}', trust_remote_code=True)" in said
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("lmkit_gpt", ["LmkitGPTForCausalLM"])
    assert (config["rotary"], config["qk_norm"], config["mlp"], config["head_bias"]) == (
        True, True, "relu2", True)
    assert set(REMOTE_FILES) <= {p.name for p in out.iterdir()}
    assert type(load(out)).__name__ == "LmkitGPTForCausalLM"
    assert_same_function(run, out)
    assert_same_ids(out, run.tokenizer, [SHAKESPEARE[25_000:26_000], UNSEEN])


@pytest.mark.slow
@pytest.mark.parametrize("options,exported_as", [
    # each option off where the default turns it on, and on where it is off
    ({"norm": "rmsnorm", "logit_softcap": 15.0, "tie_embeddings": False, "head_bias": False},
     "LmkitGPTForCausalLM"),
    ({"qk_norm": True, "tie_embeddings": False}, "LmkitGPTForCausalLM"),  # learned positions, gelu, a bias
    ({"head_bias": True}, "LmkitGPTForCausalLM"),  # GPT-2's computation but for the bias
    # RMSNorm, rotary and relu² = relu(h) * h without qk-norm or a bias: exactly a Llama
    ({"rotary": True, "norm": "rmsnorm", "mlp": "relu2", "head_bias": False}, "LlamaForCausalLM"),
], ids=["rmsnorm-softcap-untied", "qknorm-untied-bias", "bias-only", "llama-exact"])
def test_every_gpt_option_exports_with_the_same_logits_and_greedy_text(
        tmp_path: Path, hf_modules: Path, options: dict[str, object], exported_as: str) -> None:
    run = scaled_run(tmp_path / "run", tokenizer="byte", **options)
    out = lmkit.export(run, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [exported_as]
    assert needs_remote_code(out) is (exported_as == "LmkitGPTForCausalLM")
    assert config["tie_word_embeddings"] is options.get("tie_embeddings", True)
    assert type(load(out)).__name__ == exported_as
    assert_same_function(run, out, prompt="The lobster")


@pytest.mark.slow
def test_gpt2_options_stay_a_plain_gpt2_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run", head_bias=False, rotary=False, qk_norm=False, mlp="gelu",
                   zero_init=True)  # zero_init changes only the initial weights
    out = tmp_path / "hf"
    assert main(["export", str(run.dir), "--out", str(out)]) == 0
    assert "trust_remote_code" not in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2"
    assert not needs_remote_code(out)
    assert not set(REMOTE_FILES) & {p.name for p in out.iterdir()}
