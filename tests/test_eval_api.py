"""`lmkit.evaluate` and `lmkit eval`: fine-tuning a head, scores, predictions, events, stop, CLI."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

import lmkit
from lmkit.config import EvalConfig
from lmkit.errors import ConfigError
from lmkit.evaluation import evaluate
from lmkit.registry import architectures
from lmkit.engine.events import EndEvent, StartEvent, StepEvent, StopSignal

EVAL = Path(__file__).parent / "fixtures" / "eval"
GLUE = EVAL / "glue"
IMDB = EVAL / "imdb"
# A tiny scratch model; max_length 16 keeps every batch one compiled shape.
TINY: dict[str, Any] = {"embed_dim": 16, "units": 16, "vocab_size": 400, "max_length": 16,
                        "batch_size": 16, "eval_batch_size": 64}


@pytest.mark.slow
def test_scratch_sst2_scores_predictions_and_confusion_matrix() -> None:
    events: list[Any] = []
    result = evaluate("scratch", task="glue/sst2", data=GLUE, max_steps=40, learning_rate=5e-3,
                      log_every=10, reporters=[events.append], **TINY)
    labels = np.asarray([int(line.rsplit("\t", 1)[1]) for line in
                         (GLUE / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]])
    assert result.labels.tolist() == labels.tolist()
    assert result.predictions.shape == (120,) and set(result.predictions.tolist()) <= {0, 1}
    assert result.metrics == {"accuracy": pytest.approx(accuracy_score(labels, result.predictions))}
    assert result.confusion_matrix.tolist() == confusion_matrix(labels, result.predictions, labels=[0, 1]).tolist()
    assert result.metrics["accuracy"] > 0.5  # 40 steps on 400 sentences learn something
    assert [type(e) for e in events[:1]] == [StartEvent] and isinstance(events[-1], EndEvent)
    assert not events[0].token_loss  # a classifier's loss: front ends show no perplexity
    assert [e.step for e in events if isinstance(e, StepEvent)] == [10, 20, 30, 40]
    assert events[-1].reason == "completed" and result.training["steps"] == 40
    frame = result.to_dataframe()
    assert list(frame.columns) == ["prediction", "label"] and len(frame) == 120
    summary = result.to_dict()
    assert summary["task"] == "glue/sst2" and summary["labels"] == ["negative", "positive"]
    json.dumps(summary)  # JSON-ready


@pytest.mark.slow
def test_stop_signal_ends_fine_tuning_at_a_step_boundary(tmp_path: Path) -> None:
    stop = StopSignal()

    def stop_at_first_step(event: Any) -> None:
        if isinstance(event, StepEvent):
            stop.set()

    events: list[Any] = []
    result = evaluate("scratch", task="glue/sst2", data=GLUE, max_steps=500, log_every=2,
                      reporters=[stop_at_first_step, events.append], stop=stop,
                      checkpoint_dir=str(tmp_path), **TINY)
    assert result.training["steps"] == 2 and result.training["reason"] == "stopped"
    assert isinstance(events[-1], EndEvent) and events[-1].reason == "stopped"
    assert len(result.predictions) == 120  # the stopped model is still scored
    # nothing trained is lost: the stopped model is checkpointed
    from lmkit.engine.checkpoint import load_checkpoint
    from lmkit.engine.events import CheckpointEvent

    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 2 and ckpt.trainer["name"].endswith("on glue/sst2")
    weights = result.model.trainable_variables + result.model.non_trainable_variables
    for saved, var in zip(ckpt.model, weights):
        np.testing.assert_array_equal(saved, np.asarray(var))
    assert [e.step for e in events if isinstance(e, CheckpointEvent)] == [2]


@pytest.mark.slow
def test_pair_task_f1_and_frozen_backbone() -> None:
    result = evaluate("scratch", task="glue/mrpc", data=GLUE, max_steps=6, backbone_lr_multiplier=0,
                      pooling="mean", **TINY)
    assert set(result.metrics) == {"f1", "accuracy", "combined_score"}
    assert result.metrics["f1"] == pytest.approx(f1_score(result.labels, result.predictions))
    untouched = evaluate("scratch", task="glue/mrpc", data=GLUE, max_steps=0, **TINY)
    # same seed, same scratch initialisation: a frozen backbone ends where it started
    for a, b in zip(result.model.backbone.get_weights(), untouched.model.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in
                   zip(result.model.head.get_weights(), untouched.model.head.get_weights()))


@pytest.mark.slow
def test_gradual_unfreezing_opens_groups_from_the_top() -> None:
    from lmkit.evaluation.finetune import _unfrozen_groups

    opened = [_unfrozen_groups(step, 100, 3, gradual=True) for step in (0, 10, 20, 40, 99)]
    assert opened == [1, 1, 2, 3, 3]
    assert _unfrozen_groups(0, 100, 3, gradual=False) == 3
    result = evaluate("scratch", task="glue/cola", data=GLUE, max_steps=4, gradual_unfreezing=True,
                      pooling="last", **TINY)
    assert set(result.metrics) == {"matthews_correlation"}


@pytest.mark.slow
def test_regression_task_has_correlations_and_no_confusion_matrix(tmp_path: Path) -> None:
    rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
    rng = np.random.default_rng(0)
    for i in range(40):
        score = float(rng.uniform(0, 5))
        rows.append(f"{i}\tg\tf\ty\t{i}\ts\ts\ta man plays {'guitar' if score > 2.5 else 'golf'}\t"
                    f"a man {'sings' if score > 2.5 else 'walks'}\t{score:.3f}")
    folder = tmp_path / "STS-B"
    folder.mkdir()
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = evaluate("scratch", task="glue/stsb", data=tmp_path, max_steps=5, **TINY)
    assert set(result.metrics) == {"pearson", "spearmanr", "combined_score"}
    assert result.confusion_matrix is None and result.predictions.dtype == np.float32


@pytest.mark.slow
def test_evaluating_a_run_leaves_its_model_unchanged(tmp_path: Path) -> None:
    run = lmkit.train(arch="lstm", data=str(IMDB), tokenizer="word", vocab_size=300, embed_dim=16,
                      units=16, layers=1, seq_len=16, batch_size=4, max_steps=3, eval_every=3,
                      eval_batches=1, sample_tokens=0, out=str(tmp_path / "run"), reporters=[])
    before = [w.copy() for w in run.model.get_weights()]
    result = evaluate(run, task="imdb", data=IMDB, max_steps=3, max_length=16, batch_size=8)
    assert result.model_name == "run" and len(result.predictions) == 16
    for a, b in zip(before, run.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    from_dir = evaluate(str(tmp_path / "run"), task="imdb", data=IMDB, max_steps=0, max_length=16)
    assert from_dir.task.name == "imdb" and from_dir.split == "test"


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="option 'pooling' must be one of 'last', 'mean', 'concat', 'cls', got 'max'"):
        evaluate("scratch", task="glue/sst2", data=GLUE, pooling="max")
    with pytest.raises(ConfigError, match=r"unknown evaluation option 'max_step' \(did you mean 'max_steps'"):
        evaluate("scratch", task="glue/sst2", data=GLUE, max_step=3)


@pytest.mark.slow
def test_cli_prints_metrics_and_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    out = tmp_path / "out"
    args = ["eval", "scratch", "--task", "glue/sst2", "--data", str(GLUE), "--quiet", "--out", str(out),
            "--set", "max_steps=5", *[f"--set={k}={v}" for k, v in TINY.items()]]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "glue/sst2 (dev, 120 examples, model scratch-lstm)" in printed and "accuracy" in printed
    assert "confusion matrix (rows: label, columns: prediction)" in printed
    assert re.search(r"fine-tuned 5 steps x 16 on \d+ examples in [\d.]+ s \([\d.]+ examples/s", printed)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "checkpoint.npz").is_file()  # --out also keeps the fine-tuned model
    lines = (out / "predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction\tlabel" and len(lines) == 121
    assert lines[1].split("\t")[2] == "1"  # the first dev sentence is positive
    predictions = np.array([int(line.split("\t")[1]) for line in lines[1:]])
    labels = np.array([int(line.split("\t")[2]) for line in lines[1:]])
    assert metrics["metrics"]["accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    assert main(["eval", "scratch", "--task", "glue/sst3", "--data", str(GLUE)]) == 2
    assert "unknown task 'glue/sst3' (did you mean 'glue/sst2'" in capsys.readouterr().err
    assert main(["eval", "scratch", "--task", "glue/sst2", "--data", str(IMDB)]) == 2
    assert "holds the IMDb aclImdb layout" in capsys.readouterr().err


def test_eval_dry_run_prints_the_options_with_their_sources_and_trains_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    train = (GLUE / "SST-2" / "train.tsv").read_text().splitlines()[1:]
    out = tmp_path / "out"
    assert main(["eval", "scratch", "--task", "glue/sst2", "--data", str(GLUE), "--dry-run",
                 "--set", "epochs=3", "--set", "batch_size=16", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# scratch on glue/sst2" and not out.exists()
    shown = {line.split(" = ")[0]: line.split(" = ", 1)[1].split("#") for line in lines[1:] if line}
    assert set(shown) == {f.name for f in dataclasses.fields(EvalConfig)}  # every option
    assert [v.strip() for v in shown["batch_size"]] == ["16", "--set"]
    assert [v.strip() for v in shown["checkpoint_dir"]] == [f'"{out}"', "--out"]
    assert [v.strip() for v in shown["learning_rate"]] == ["0.002", "default"]
    assert [v.strip() for v in shown["backbone_lr_multiplier"]] == [
        "1.0", "derived: a scratch backbone learns everything"]
    steps = -(-3 * len(train) // 16)  # 3 epochs in batches of 16, the last one partial
    assert [v.strip() for v in shown["warmup_steps"]] == [
        str(int(0.06 * steps)), f"derived: 6% of {steps} steps"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(architectures))
def test_every_architecture_gives_hidden_states_to_a_head(arch: str) -> None:
    from lmkit.build import build_model
    from lmkit.config import TrainConfig
    from lmkit.evaluation.heads import SequenceClassifier, hidden_states

    cfg = TrainConfig(arch=arch, embed_dim=8, units=12, layers=1, heads=2, seq_len=16)
    backbone = build_model(cfg, vocab_size=50)
    tokens = np.random.default_rng(0).integers(1, 50, (3, 16)).astype("int32")
    states = np.asarray(hidden_states(backbone, tokens))
    assert states.shape[:2] == (3, 16) and np.isfinite(states).all()
    assert states.shape[2] in (8, 12, 128)  # embed_dim, units, or classic_lstm's fixed width
    if not architectures.entry(arch).has("encoder"):  # an encoder's call is its hidden states
        assert np.asarray(backbone(tokens)).shape == (3, 16, 50)  # the model itself is unchanged
    clf = SequenceClassifier(backbone, 3, pooling="concat")
    assert np.asarray(clf((tokens, np.array([16, 4, 1], "int32")))).shape == (3, 3)


def test_a_never_called_backbone_gives_hidden_states_and_a_model_without_them_is_refused() -> None:
    from lmkit.evaluation.heads import hidden_states
    from lmkit.models.base import HostNormal, LanguageModel

    class Lookup(LanguageModel):  # like every architecture, `features` reads weights `build` makes
        def build(self, input_shape: Any) -> None:
            self._build_embedding(4, initializer=HostNormal(1.0))  # compiles nothing

        def call(self, tokens: Any, training: bool = False) -> Any:
            return self.features(tokens)

        def features(self, tokens: Any, training: bool = False) -> Any:
            return self._embed(tokens)

    backbone = Lookup(13)  # never called: no weights yet
    tokens = np.array([[1, 2, 3], [4, 5, 6]], "int32")
    states = np.asarray(hidden_states(backbone, tokens))
    np.testing.assert_array_equal(states, np.asarray(backbone.embedding)[tokens])
    with pytest.raises(ConfigError, match="LanguageModel does not expose its hidden states"):
        hidden_states(LanguageModel(13), tokens)


def test_the_task_metric_is_imported_while_the_scored_split_is_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmkit.evaluation import metrics
    from lmkit.evaluation.shapes.classification import Classification

    seen: list[str] = []
    real_preload, real_outputs = metrics.preload, Classification.outputs
    monkeypatch.setattr(metrics, "preload", lambda name: (seen.append(f"preload {name}"), real_preload(name)))
    monkeypatch.setattr(Classification, "outputs",
                        lambda self, *a, **k: (seen.append("outputs"), real_outputs(self, *a, **k))[1])
    result = evaluate("scratch", task="glue/mrpc", data=GLUE, max_steps=2,
                      reporters=[lambda e: seen.append("end") if isinstance(e, EndEvent) else None], **TINY)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0  # scored with the module the thread imported
    # after the training (its steps keep every core busy), before the scored split's outputs
    assert seen == ["end", "preload glue", "outputs"]
