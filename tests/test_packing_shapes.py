"""The compiled shapes of fine-tuning and scoring: a short fine-tuning packs every batch into one
shape (one training program) with the padded path's losses, a long one gets more shapes where
they save computation, sentence pairs of similar lengths pack into rows wider than the longest
(with the padded path's losses), scoring packs in one program, and a second identical process
compiles nothing (the persistent compilation cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import lmkit  # noqa: F401  (JAX backend)
from lmkit.evaluation.encoding import Encoded
from lmkit.registry import architectures

VOCAB = 23
GLUE = Path(__file__).resolve().parent / "fixtures" / "eval" / "glue"
MODELS = {
    "bert": ("bert", dict(embed_dim=24, layers=2, heads=3, ffn_dim=32, seq_len=160, dropout=0.0)),
    "gpt": ("gpt", dict(embed_dim=16, layers=2, heads=2, seq_len=64)),
}


def _classifier(key: str, **changes):
    from lmkit.evaluation.heads import SequenceClassifier
    from lmkit.evaluation.shapes.classification import build_head

    keras.utils.set_random_seed(0)
    name, options = MODELS[key]
    backbone = architectures.get(name)(VOCAB, **{**options, **changes})
    backbone(np.ones((1, 4), np.int32))
    model = SequenceClassifier(backbone, 2, pooling="cls", dropout=0.0)
    build_head(model, 1)
    return model


def _trainee(key: str, data: Encoded, packing: bool, total: int, batch_size: int = 32, **changes):
    from lmkit.config import EvalConfig
    from lmkit.evaluation.finetune import FinetuneTrainee
    from lmkit.resolve import resolve

    cfg = EvalConfig(batch_size=batch_size, max_length=64, max_steps=total, loss="cross_entropy",
                     learning_rate=1e-2, backbone_lr_multiplier=1.0, packing=packing)
    parts = resolve(cfg, backbone="scratch", steps=total)
    return FinetuneTrainee(_classifier(key, **changes), data, parts.config, total, parts)


def _sentences(n: int, seed: int = 6) -> Encoded:
    """Short sentences and a few long ones, as SST-2's."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.08, n) + 2, 64)
    return Encoded([rng.integers(4, VOCAB, k).astype(np.int32) for k in lengths], rng.integers(0, 2, n))


def test_a_short_fine_tuning_packs_every_batch_into_one_shape_and_a_long_one_into_few():
    data = _sentences(650)  # 21 batches of 32, the last one short
    real = int(data.lengths().sum())
    short = _trainee("gpt", data, True, total=63)  # 3 epochs
    shapes = {short._batch(s)[0].tokens.shape for s in range(63)}
    assert len(short.widths) == 1 and len(shapes) == 1  # every step, the last short batch too
    long = _trainee("gpt", data, True, total=2000)  # compilation amortised: tighter shapes pay
    assert len(long.widths) > 1
    epoch = range(long.steps_per_epoch)
    computed = [sum(t._batch(s)[0].tokens.size for s in epoch) for t in (short, long)]
    assert computed[1] < 1.15 * real < computed[0]


def _pairs(n: int, seed: int = 7) -> Encoded:
    """Sentence pairs of similar lengths, as MRPC's: most longer than half the longest."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.normal(26, 5, n).round().astype(int), 8, 50)
    return Encoded([rng.integers(4, VOCAB, k).astype(np.int32) for k in lengths], rng.integers(0, 2, n))


def test_pairs_of_similar_lengths_pack_into_rows_wider_than_the_longest(monkeypatch):
    from lmkit.evaluation import finetune

    data = _pairs(320)  # 10 batches of 32
    real, longest = int(data.lengths().sum()), int(data.lengths().max())
    wide = _trainee("gpt", data, True, total=100)
    monkeypatch.setattr(finetune, "WIDEST_PACKING", 1)  # only rows of the longest example's width
    narrow = _trainee("gpt", data, True, total=100)
    assert narrow.packed_width == longest < wide.packed_width
    # two pairs rarely fit a row of the longest's width: such rows are half empty
    computed = [sum(t._batch(s)[0].tokens.size for s in range(10)) for t in (narrow, wide)]
    assert computed[1] < 0.85 * computed[0] and computed[1] < 1.25 * real


def test_examples_of_similar_lengths_are_padded_where_packing_would_compute_more():
    # lengths 33-43: two never share a row of the longest's width, and in wider rows each query
    # attends to more keys; batches sorted by length pad to within a few tokens
    rng = np.random.default_rng(8)
    lengths = rng.integers(33, 44, 640)
    data = Encoded([rng.integers(4, VOCAB, k).astype(np.int32) for k in lengths],
                   rng.integers(0, 2, len(lengths)))
    trainee = _trainee("gpt", data, True, total=2000)
    assert trainee.packed_width is None and not trainee.packs  # packing asked for, not chosen
    computed = sum(trainee._batch(s)[0][0].size for s in range(trainee.steps_per_epoch))
    assert computed < 1.06 * lengths.sum()


def test_packed_rows_are_never_wider_than_the_models_positions(monkeypatch):
    from lmkit.evaluation import finetune

    # a row's padding numbers its own positions on: past the model's last position embedding
    # they read NaN, which the attention then spreads
    data = _pairs(24, seed=3)
    monkeypatch.setattr(finetune, "ATTENTION_KEYS", 10**9)  # the widest rows would be chosen
    monkeypatch.setattr(finetune, "COMPILE_POSITIONS", 50_000)
    assert _trainee("bert", data, True, total=1000, batch_size=8, seq_len=200).packed_width > 64
    assert _trainee("bert", data, True, total=1000, batch_size=8, seq_len=64).packed_width <= 64


@pytest.mark.slow  # two compiled steps of a small bert
def test_rows_wider_than_the_longest_example_give_the_padded_losses_and_weights(monkeypatch):
    from lmkit.evaluation import finetune

    data = _pairs(24, seed=3)  # three full batches of 8
    # a long run (of which three steps are taken) with attention free and compilation dear:
    # few shapes of wide rows, several examples each
    monkeypatch.setattr(finetune, "ATTENTION_KEYS", 10**9)
    monkeypatch.setattr(finetune, "COMPILE_POSITIONS", 50_000)
    packed = _trainee("bert", data, True, total=1000, batch_size=8)
    padded = _trainee("bert", data, False, total=1000, batch_size=8)
    assert packed.packed_width > int(data.lengths().max()) and padded.packed_width is None
    assert packed._batch(0)[0].segments.max() > 2  # more than two examples share a row
    padded._rows = packed._rows  # the same examples at each step
    np.testing.assert_allclose(packed.train(0, 3), padded.train(0, 3), rtol=1e-4, atol=1e-5)
    for a, b in zip(packed.model_arrays(), padded.model_arrays()):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow  # two compiled steps of a small bert
def test_one_shape_fine_tuning_gives_the_padded_losses_and_weights():
    # three full batches of 8 (a short last batch is filled with copies of other examples,
    # chosen differently packed and padded, so its loss differs)
    data = _sentences(24, seed=4)
    packed = _trainee("bert", data, True, total=3, batch_size=8)
    padded = _trainee("bert", data, False, total=3, batch_size=8)
    assert len(packed.widths) == 1 and padded.packed_width is None
    padded._rows = packed._rows  # the same examples at each step
    np.testing.assert_allclose(packed.train(0, 3), padded.train(0, 3), rtol=1e-4, atol=1e-5)
    for a, b in zip(packed.model_arrays(), padded.model_arrays()):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow  # a small bert compiled for one packed and two padded shapes
def test_packed_scoring_gives_the_padded_outputs_in_one_program():
    from lmkit.evaluation.finetune import predict
    from lmkit.paths import enable_compilation_cache, programs

    enable_compilation_cache()
    model = _classifier("bert")
    full = _sentences(40, seed=8)
    data = Encoded([ids[:32] for ids in full.ids], full.labels)  # two padded widths: 16 and 32

    def scored(packing: bool) -> tuple[np.ndarray, dict[str, int]]:
        before = programs()
        outputs = predict(model, data, batch_size=16, max_length=64, packing=packing)
        return outputs, {k: n - before.get(k, 0) for k, n in programs().items() if n > before.get(k, 0)}

    packed, packed_programs = scored(True)
    padded, padded_programs = scored(False)
    np.testing.assert_allclose(packed, padded, atol=1e-5)
    assert packed_programs == {"packed_classify_body": 1}
    assert padded_programs["classify_body"] > 1  # one per padded width


# -- whole processes ---------------------------------------------------------------------------------
_CHILD = r"""
import json, sys
import lmkit
from lmkit.paths import compilations, programs
folder, glue = sys.argv[1], sys.argv[2]
texts = ["the cat sat on the mat", "a quick brown fox", "good movies make people happy"] * 7
lmkit.from_pretrained(folder).embed(texts, normalize=True)
embedded = compilations()
result = lmkit.evaluate(folder, task="glue/sst2", data=glue, epochs=1, max_length=64, batch_size=32,
                        score_every=6)
print("RESULT " + json.dumps({"embedded": embedded, "total": compilations(), "programs": programs(),
                              "training": {k: result.training.get(k) for k in ("packed", "programs")}}))
"""


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The same embedding and fine-tuning of a tiny BERT on the SST-2 fixture, run twice in new
    processes sharing a fresh compilation cache."""
    from hf_checkpoints import bert_folder

    tmp = tmp_path_factory.mktemp("shapes")
    folder = bert_folder(tmp / "bert")
    env = {**os.environ, "LMKIT_CACHE_DIR": str(tmp / "cache")}
    found = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(GLUE / "SST-2")],
                              capture_output=True, text=True, timeout=600, env=env, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
        found.append(json.loads(line[len("RESULT "):]))
    return found


@pytest.mark.slow  # two whole processes
def test_a_fine_tuning_on_the_fixture_compiles_one_training_and_one_scoring_program(two_processes):
    first = two_processes[0]
    assert len(first["training"]["packed"]["rows"]) == 1  # 13 steps, one shape
    assert first["training"]["programs"]["train_chunk"] == 1
    # dev scoring while training (every 6 steps) and after it: one packed program, reused
    assert first["programs"]["packed_classify_body"] == 1
    assert first["programs"]["packed_pooled_body"] == 1  # the embedding


@pytest.mark.slow  # two whole processes
def test_a_second_identical_process_compiles_nothing(two_processes):
    first, second = two_processes
    assert first["total"]["compiled"] > 0
    assert second["embedded"]["compiled"] == 0 and second["total"]["compiled"] == 0
    assert second["total"]["from_cache"] == first["total"]["compiled"] + first["total"]["from_cache"]
