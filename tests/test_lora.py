"""LoRA adapters (`lmkit.adapters`): a parameter group of the one training step whose base
weights stay frozen, adapter files that Hugging Face `peft` reads and writes (checked against
`transformers` + `peft` themselves, on tiny random GPT-2 and BERT models they make), merging,
resuming, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from hf_checkpoints import bert_folder, decoder_folder, gpt2_folder

import lmkit
from lmkit.adapters.lora import lora_group, lora_units, select_units
from lmkit.adapters.peft_format import load_adapter, merge_adapter, save_adapter, save_trained
from lmkit.config import TrainConfig
from lmkit.errors import ConfigError, RunError
from lmkit.param_groups import Frozen, ParamGroups
from lmkit.train_step import TrainStep

TOKENS = np.array([[5, 17, 42, 8, 99, 3, 61, 7], [12, 4, 4, 90, 31, 2, 77, 15]], np.int32)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gpt2_folder(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with grouped-query attention (2 key/value heads for 4 query heads)."""
    return decoder_folder(tmp_path_factory.mktemp("llama"), "llama", num_key_value_heads=2)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bert_folder(tmp_path_factory.mktemp("bert"))


def _cfg(**keys):
    """The LoRA keys of a config (`lmkit.config.sections.Adapter`) and a seed."""
    return SimpleNamespace(**{"lora_rank": 4, "lora_alpha": 8.0, "lora_targets": ["c_attn"],
                              "seed": 0, **keys})


def _token_loss(labels, logits):
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                       from_logits=True))


def _lora_step(model, **keys) -> TrainStep:
    """A language model's training step with LoRA on `model` (every other weight frozen)."""
    variables = model.trainable_variables
    held, group = lora_group(model, variables, _cfg(**keys), keras.optimizers.Adam(1e-2))
    labels = ["lora" if h else "frozen" for h in held]
    groups = ParamGroups(variables, labels, {"lora": group, "frozen": Frozen()})
    step = TrainStep(model, groups, _token_loss)
    step.lora = group
    return step


def _train(step: TrainStep, steps: int = 6) -> None:
    xs = np.stack([TOKENS[:, :-1]] * steps)
    ys = np.stack([TOKENS[:, 1:]] * steps)
    step.train(xs, ys)


def _logits(model, weights=None) -> np.ndarray:
    if weights is None:
        return np.asarray(model(TOKENS))
    out, _ = model.stateless_call(weights, [v.value for v in model.non_trainable_variables], TOKENS)
    return np.asarray(out)


@pytest.mark.slow
def test_an_untrained_adapter_leaves_the_outputs_unchanged(gpt2_dir: Path) -> None:
    model = lmkit.from_pretrained(gpt2_dir).model
    step = _lora_step(model)
    a = step.groups.params(step.state.slots)[0]
    assert np.abs(np.asarray(a)).max() > 0  # A is drawn; B starts at zero
    assert np.array_equal(_logits(model, step.effective_weights()), _logits(model))


@pytest.mark.slow
def test_training_moves_only_the_adapters_and_the_merge_is_base_plus_adapter(
        gpt2_dir: Path, tmp_path: Path) -> None:
    model = lmkit.from_pretrained(gpt2_dir).model
    base = [np.array(v.value) for v in model.trainable_variables]
    step = _lora_step(model)
    before = _logits(model)
    _train(step)
    # frozen: every weight of the model is bit-identical in the step's state
    for got, want in zip(step.state.trainable, base):
        assert np.array_equal(np.asarray(got), want)
    # optimizer state exists for the adapters only: no slot has the shape of a frozen weight
    adapters = [tuple(p.shape) for p in step.groups.params(step.state.slots)]
    shapes = [tuple(s.shape) for s in step.groups.slots() if len(s.shape)]
    assert sorted(shapes) == sorted(adapters * 3)  # A, B; Adam's two moments of each
    assert len(adapters) == 2 * 2  # c_attn of 2 layers, A and B each
    step.sync()
    assert np.abs(_logits(model) - before).max() > 1e-3  # the adapter learned something
    # the merged kernel is the base kernel plus (alpha / r) A B, from the files peft reads
    save_trained(tmp_path / "adapter", step.lora, step.groups.params(step.optimizer_arrays()),
                 model)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    from safetensors.numpy import load_file

    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    scale = config["lora_alpha"] / config["r"]
    for i, block in enumerate(model.blocks):
        key = f"base_model.model.transformer.h.{i}.attn.c_attn"
        a = tensors[f"{key}.lora_A.weight"].astype(np.float64)  # (r, in)
        b = tensors[f"{key}.lora_B.weight"].astype(np.float64)  # (out, r)
        index = [v.path for v in model.trainable_variables].index(block.w_qkv.path)
        want = base[index] + scale * (b @ a).T
        assert np.abs(np.asarray(block.w_qkv.value) - want).max() < 1e-5


@pytest.mark.slow
def test_a_resumed_lora_training_continues_exactly(gpt2_dir: Path) -> None:
    model = lmkit.from_pretrained(gpt2_dir).model
    step = _lora_step(model)
    _train(step, 3)
    saved = step.model_arrays(), step.optimizer_arrays()
    _train(step, 3)
    fresh = _lora_step(lmkit.from_pretrained(gpt2_dir).model)
    fresh.restore(*saved)
    _train(fresh, 3)
    for a, b in zip(fresh.optimizer_arrays(), step.optimizer_arrays()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_peft_loads_an_lmkit_decoder_adapter_with_the_same_logits(arch: str, gpt2_dir: Path,
                                                                  llama_dir: Path,
                                                                  tmp_path: Path) -> None:
    """GPT-2's fused attention kernel, and Llama's grouped-query attention (key and value
    projections narrower than the query's)."""
    import peft
    import torch
    import transformers

    folder = gpt2_dir if arch == "gpt2" else llama_dir
    targets = ["attn.*", "mlp.c_fc"] if arch == "gpt2" else ["q_proj", "k_proj", "v_proj", "mlp.*"]
    model = lmkit.from_pretrained(folder).model
    step = _lora_step(model, lora_targets=targets)
    _train(step)
    step.sync()
    save_trained(tmp_path / "adapter", step.lora, step.groups.params(step.optimizer_arrays()),
                 model, base=str(folder))
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        base = reference(torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()
    adapted = peft.PeftModel.from_pretrained(reference, tmp_path / "adapter").eval()
    with torch.no_grad():  # peft computes x W + s (x A) B: the adapter unmerged
        want = adapted(torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()
    assert np.abs(want - base).max() > 1e-3  # the trained adapter changes the outputs
    assert np.abs(_logits(model) - want).max() < 1e-4


@pytest.mark.slow
def test_peft_loads_an_lmkit_bert_adapter_with_the_same_hidden_states(bert_dir: Path,
                                                                      tmp_path: Path) -> None:
    import peft
    import torch
    import transformers

    model = lmkit.from_pretrained(bert_dir).model
    step = _lora_step(model, lora_targets=["q", "v"])
    # an untrained B is zero: give the adapters values to compare
    rng = np.random.default_rng(1)
    params = [rng.normal(0, 0.2, p.shape).astype(np.float32)
              for p in step.groups.params(step.optimizer_arrays())]
    save_trained(tmp_path / "adapter", step.lora, params, model)
    merge_adapter(load_adapter(tmp_path / "adapter", model))
    tokens = np.array([[2, 17, 42, 8, 39, 3]], np.int32)
    got = np.asarray(model.features(tokens))
    reference = transformers.BertForSequenceClassification.from_pretrained(bert_dir).eval()
    adapted = peft.PeftModel.from_pretrained(reference, tmp_path / "adapter").eval()
    with torch.no_grad():
        want = adapted.base_model.model.bert(torch.tensor(tokens, dtype=torch.long)
                                             ).last_hidden_state.numpy()
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(got - np.asarray(lmkit.from_pretrained(bert_dir).model.features(tokens))
                  ).max() > 1e-3  # the adapter changed them


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt2", "bert", "llama"])
def test_lmkit_loads_a_peft_made_adapter_with_the_same_outputs(arch: str, gpt2_dir: Path,
                                                               bert_dir: Path, llama_dir: Path,
                                                               tmp_path: Path) -> None:
    import peft
    import torch
    import transformers

    folder = {"gpt2": gpt2_dir, "bert": bert_dir, "llama": llama_dir}[arch]
    cls = {"gpt2": transformers.GPT2LMHeadModel, "bert": transformers.BertModel,
           "llama": transformers.LlamaForCausalLM}[arch]
    targets = {"gpt2": ["c_attn", "c_fc"], "bert": ["query", "value", "output.dense"],
               "llama": ["q_proj", "v_proj", "down_proj"]}[arch]
    torch.manual_seed(0)
    made = peft.get_peft_model(cls.from_pretrained(folder).eval(),
                               peft.LoraConfig(r=4, lora_alpha=16, target_modules=targets,
                                               fan_in_fan_out=arch == "gpt2"))
    with torch.no_grad():  # peft starts B at zero: give every adapter values
        for name, p in made.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    made.eval().save_pretrained(tmp_path / "adapter")
    tokens = np.array([[2, 17, 42, 8, 39, 3]], np.int32)
    with torch.no_grad():
        out = made(torch.tensor(tokens, dtype=torch.long))
    want = (out.last_hidden_state if arch == "bert" else out.logits).numpy()
    model = lmkit.from_pretrained(folder).model
    adapter = load_adapter(tmp_path / "adapter", model)
    assert len(adapter.units) == {"gpt2": 4, "bert": 8, "llama": 6}[arch]
    merge_adapter(adapter)
    got = np.asarray(model.features(tokens) if arch == "bert" else model(tokens))
    assert np.abs(got - want).max() < 1e-4


# -- refusals -------------------------------------------------------------------------------------

def _built(arch: str, **options):
    """A tiny registered model with its weights made (not called: nothing compiles)."""
    from lmkit.registry import architectures

    model = architectures.get(arch)(50, **options)
    model.build((None, 8))
    return model


@pytest.fixture(scope="module")
def tiny_gpt2():
    return _built("gpt2", embed_dim=32, layers=2, heads=4, n_positions=16)


def test_a_target_that_matches_no_kernel_lists_the_kernels(tiny_gpt2) -> None:
    model = tiny_gpt2
    # GPT-2 fuses q, k and v into c_attn: "q" names no kernel of its own
    with pytest.raises(ConfigError, match=r"'q' matches no kernel.*h\.0\.attn\.c_attn"):
        lora_group(model, model.trainable_variables, _cfg(lora_targets=["q", "v"]), None)


def test_targets_select_blocks_of_a_fused_kernel() -> None:
    model = _built("bert", embed_dim=32, layers=1, heads=4, ffn_dim=48, seq_len=16)
    units = select_units(lora_units(model), ["q", "v"])
    assert [u.name for u in units[:2]] == ["encoder.layer.0.attention.self.query",
                                           "encoder.layer.0.attention.self.value"]
    assert [(u.start, u.stop) for u in units[:2]] == [(0, 32), (64, 96)]  # of w_qkv (32, 96)


def test_a_rank_outside_the_kernel_is_refused(tiny_gpt2) -> None:
    model = tiny_gpt2
    with pytest.raises(ConfigError, match=r"lora_rank=33 is larger than kernel h\.0\.attn\.c_attn "
                                          r"\(32, 96\).*at most 32"):
        lora_group(model, model.trainable_variables, _cfg(lora_rank=33), None)
    with pytest.raises(ConfigError, match="lora_rank"):
        TrainConfig.from_sources(overrides={"lora_rank": 0})


def test_an_adapter_made_for_another_base_names_the_shapes(tmp_path: Path) -> None:
    small = _built("gpt", embed_dim=16, layers=1, heads=2, seq_len=8)
    large = _built("gpt", embed_dim=32, layers=1, heads=2, seq_len=8)
    units = select_units(lora_units(small), ["block_0/w_qkv"])
    save_adapter(tmp_path / "a", units, [np.ones((16, 2)), np.ones((2, 48))], rank=2, alpha=4)
    with pytest.raises(RunError, match=r"lora_A \(2, 16\).*kernel block_0/w_qkv of shape "
                                       r"\(in, out\) = \(32, 96\)"):
        load_adapter(tmp_path / "a", large)


def test_an_optimizer_with_evaluation_weights_is_refused_with_an_adapter() -> None:
    from lmkit.resolve import resolve

    with pytest.raises(ConfigError, match="schedule_free_adamw.*adapter = \"lora\""):
        resolve(TrainConfig.from_sources(overrides={"adapter": "lora",
                                                    "optimizer": "schedule_free_adamw"}))


def test_an_adapter_on_a_recurrent_model_names_the_architectures_that_support_it() -> None:
    lstm = _built("lstm")
    with pytest.raises(ConfigError, match=r"does not support architecture 'lstm'.*bert, gpt, gpt2"):
        lora_group(lstm, lstm.trainable_variables, _cfg(), None)


# -- the clients: fine-tuning and language-model training -----------------------------------------

@pytest.mark.slow
def test_a_lora_fine_tuning_changes_only_the_adapted_blocks_and_reopens(bert_dir: Path,
                                                                        tmp_path: Path) -> None:
    from test_pretrained_finetune import _easy_task

    from lmkit.evaluation.evaluator import load_finetuned

    out = tmp_path / "ft"
    result = lmkit.evaluate(str(bert_dir), task="glue/sst2", data=str(_easy_task(tmp_path / "d")),
                            max_steps=12, batch_size=16, learning_rate=1e-2, adapter="lora",
                            lora_rank=2, lora_targets=["q", "v"], checkpoint_dir=str(out))
    assert result.training["steps"] == 12
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"][:2] == ["bert.encoder.layer.0.attention.self.query",
                                            "bert.encoder.layer.0.attention.self.value"]
    tuned = load_finetuned(out).model.backbone
    base = lmkit.from_pretrained(bert_dir).model
    for got, want in zip(tuned.trainable_variables, base.trainable_variables):
        got, want = np.asarray(got.value), np.asarray(want.value)
        if got.shape == (32, 96):  # w_qkv: the query and value blocks moved, the key's did not
            assert np.array_equal(got[:, 32:64], want[:, 32:64])
            assert np.abs(got[:, :32] - want[:, :32]).max() > 0
            assert np.abs(got[:, 64:] - want[:, 64:]).max() > 0
        else:
            assert np.array_equal(got, want)


@pytest.mark.slow
def test_a_lora_language_model_run_writes_an_adapter_peft_loads(gpt2_dir: Path,
                                                                 tmp_path: Path) -> None:
    import peft
    import torch
    import transformers

    corpus = tmp_path / "text.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log\n" * 200)
    run = lmkit.train(data=str(corpus), init=str(gpt2_dir), seq_len=32, batch_size=4,
                      max_steps=10, warmup_steps=0, learning_rate=1e-2, sample_tokens=0,
                      adapter="lora", lora_targets=["c_attn"], out=str(tmp_path / "run"),
                      reporters=[])
    losses = [r["loss"] for r in run.history if "loss" in r]
    assert losses[-1] < losses[0]
    reference = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    adapted = peft.PeftModel.from_pretrained(reference, run.dir / "adapter").eval()
    with torch.no_grad():
        want = adapted(torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()
    got = np.asarray(lmkit.load(run.dir).model(TOKENS))  # model.keras: the adapter merged
    assert np.abs(got - want).max() < 1e-4
    # the summary counts what trained: rank 8 adapters on c_attn (32 -> 96) of 2 layers, and
    # Adam's two moments of each (plus its step counter and learning rate)
    summary = json.loads((run.dir / "summary.json").read_text())
    adapters = 2 * (32 * 8 + 8 * 96)
    assert summary["trainable_parameters"] == adapters
    assert 2 * adapters <= summary["optimizer_state"] <= 2 * adapters + 2
    assert summary["parameters"] > 10 * adapters
    # export: the adapter alone (peft's layout), or folded into the GPT-2 it names (--merge)
    from lmkit.cli import main

    assert main(["export", str(run.dir), "--out", str(tmp_path / "alone")]) == 0
    assert sorted(p.name for p in (tmp_path / "alone").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert main(["export", str(tmp_path / "alone"), "--merge", "--out", str(tmp_path / "merged")]) == 0
    merged = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        logits = merged(torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()
    assert np.abs(logits - want).max() < 1e-4
    with pytest.raises(ConfigError, match="--merge"):
        lmkit.api.export(run.dir / "adapter", tmp_path / "refused")


def test_a_training_that_fits_only_with_lora_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmkit import build
    from lmkit.models.gpt import GPT

    cfg = TrainConfig.from_sources(overrides={"arch": "gpt", "embed_dim": 256, "layers": 4})
    params, floats = GPT.training_size(1000, cfg.batch_size, cfg.seq_len,
                                       cfg.model_kwargs(build._accepted(GPT)))
    between = 4 * params + 4 * floats + 2 ** 20  # room for frozen weights, not for Adam's state
    monkeypatch.setattr(build, "memory_limit", lambda: (between, "this machine's memory"))
    with pytest.raises(ConfigError, match=r"or train LoRA adapters \(adapter = \"lora\""):
        build.check_fits(cfg, 1000, GPT)
    note = build.check_fits(cfg.replace(adapter="lora"), 1000, GPT)
    assert note.startswith('fits only with adapter = "lora"')
    monkeypatch.setattr(build, "memory_limit", lambda: (10 * between, "this machine's memory"))
    assert build.check_fits(cfg.replace(adapter="lora"), 1000, GPT) is None


@pytest.mark.slow
def test_a_generation_task_fine_tunes_lora_adapters_only(tmp_path: Path) -> None:
    import dataclasses

    from lmkit.evaluation.shapes import Generation
    from lmkit.evaluation.tasks import get_task

    task = dataclasses.replace(get_task("multi30k"), shape=Generation(max_new_tokens=8))
    out = tmp_path / "ft"
    result = lmkit.evaluate("scratch", task=task, data=str(Path(__file__).parent / "fixtures" / "multi30k"),
                            arch="gpt", embed_dim=32, layers=1, heads=2, max_length=160,
                            batch_size=8, max_steps=4, learning_rate=3e-3, log_every=2,
                            adapter="lora", lora_targets=["block_0/*"], checkpoint_dir=str(out))
    assert result.training["steps"] == 4 and len(result.predictions) == 8
    summary = json.loads((out / "summary.json").read_text())
    # rank 8 adapters on the block's four kernels: w_qkv 32->96, w_proj 32->32, w_fc 32->128,
    # w_out 128->32
    assert summary["trainable_parameters"] == 8 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
