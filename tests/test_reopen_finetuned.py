"""A folder `lmkit eval scratch --out DIR` wrote reopens (`lmkit.open_model`, `load_finetuned`):
the tokenizer fitted on the task and the model's options are kept beside the weights, so the
model decodes and scores again, with other decoding options, without training."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import lmkit
from lmkit.cli import main
from lmkit.errors import ConfigError, RunError
from lmkit.evaluation.evaluator import FineTuned, load_finetuned
from lmkit.evaluation.tasks import get_task

FIXTURES = Path(__file__).parent / "fixtures"
MULTI30K = FIXTURES / "multi30k"
GLUE = FIXTURES / "eval" / "glue"
# a tiny translator: 16 steps are enough for its greedy outputs to be its own, not a random model's
TRANSLATOR = ["arch=gpt", "tokenizer=bpe", "vocab_size=300", "embed_dim=32", "units=32", "layers=1", "heads=2",
              "max_length=160", "batch_size=8", "max_steps=16", "learning_rate=1e-2", "log_every=8",
              "max_new_tokens=16"]


def _table(folder: Path) -> list[dict[str, str]]:
    with open(folder / "predictions.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _sources() -> list[str]:
    return (MULTI30K / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()


def _one_line(texts: list[str]) -> list[str]:
    """As predictions.tsv writes a text (`Shape.label_text`)."""
    return [" ".join(t.split()) for t in texts]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def translator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The --out folder of a scratch translator fine-tuned on the Multi30K sample."""
    out = tmp_path_factory.mktemp("reopen") / "mt"
    settings = [arg for s in TRANSLATOR for arg in ("--set", s)]
    assert main(["eval", "scratch", "--task", "multi30k", "--data", str(MULTI30K), "--quiet",
                 "--out", str(out), *settings]) == 0
    return out


@pytest.mark.slow
def test_a_scratch_translator_reopens_and_decodes_what_its_run_scored(translator: Path) -> None:
    tuned = lmkit.open_model(translator)
    assert isinstance(tuned, FineTuned) and tuned.task.name == "multi30k/de-en"
    assert (translator / "tokenizer.json").is_file() and tuned.tokenizer.vocab_size <= 300
    backbone = tuned.model.backbone
    assert type(backbone).__name__ == "GPT" and backbone.embed_dim == 32 and backbone.max_context == 160
    rows = _table(translator)
    # the same greedy outputs as the fine-tuning scored: the weights and the tokenizer are its own
    assert _one_line(tuned.decode(_sources())) == [r["hypothesis"] for r in rows]
    assert any(r["hypothesis"] for r in rows)  # a trained model writes something


@pytest.mark.slow
def test_lmkit_eval_of_the_folder_rescores_with_beams_without_training(translator: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import sacrebleu

    weights, summary = _digest(translator / "checkpoint.npz"), _digest(translator / "summary.json")
    beams = tmp_path / "beams"
    # no --task: the folder's own
    assert main(["eval", str(translator), "--data", str(MULTI30K), "--set", "num_beams=2", "--quiet",
                 "--out", str(beams)]) == 0
    assert "scored as it is (no training)" in capsys.readouterr().out
    saved = json.loads((beams / "metrics.json").read_text(encoding="utf-8"))
    assert saved["task"] == "multi30k/de-en" and saved["training"] == {"reopened": str(translator)}  # nothing trained
    assert saved["config"]["num_beams"] == 2 and saved["config"]["max_new_tokens"] == 16  # its own, kept
    assert _digest(translator / "checkpoint.npz") == weights and _digest(translator / "summary.json") == summary
    rows = _table(beams)
    bleu = sacrebleu.corpus_bleu([r["hypothesis"] for r in rows], [[r["reference"] for r in rows]])
    assert saved["metrics"]["bleu"] == pytest.approx(bleu.score)
    # FineTuned.decode with the same option decodes the same beams
    tuned = lmkit.open_model(translator)
    assert _one_line(tuned.decode(_sources(), num_beams=2)) == [r["hypothesis"] for r in rows]


@pytest.mark.slow
def test_a_scratch_classifier_reopens_and_predicts_the_same_labels(tmp_path: Path) -> None:
    out = tmp_path / "sst2"
    tiny: dict[str, Any] = {"embed_dim": 16, "units": 16, "vocab_size": 400, "max_length": 16, "batch_size": 16}
    result = lmkit.evaluate("scratch", task="glue/sst2", data=GLUE, max_steps=20, learning_rate=5e-3,
                            log_every=10, checkpoint_dir=str(out), **tiny)
    again = lmkit.evaluate(lmkit.open_model(out), task="glue/sst2", data=GLUE)
    assert again.training == {"reopened": str(out)} and again.config["max_length"] == 16
    assert again.predictions.tolist() == result.predictions.tolist()
    assert again.metrics == result.metrics


def _old_scratch_folder(folder: Path) -> Path:
    """A scratch fine-tuning's folder as lmkit wrote it before it kept the tokenizer."""
    folder.mkdir()
    record = {"backbone": None, "task": "glue/sst2", "pooling": "concat", "head_dropout": 0.1}
    (folder / "summary.json").write_text(json.dumps({"task": "scratch-lstm on glue/sst2", "classifier": record}),
                                         encoding="utf-8")
    (folder / "checkpoint.npz").write_bytes(b"")
    return folder


def test_a_folder_written_before_the_tokenizer_was_kept_says_to_fine_tune_again(tmp_path: Path) -> None:
    folder = _old_scratch_folder(tmp_path / "old")
    with pytest.raises(RunError, match=r"fitted on the task and not saved, so it cannot be reopened\. Fine-tune it "
                                       r"again with this version \(lmkit eval scratch --task glue/sst2 --out"):
        load_finetuned(folder)


def test_a_fine_tuned_model_is_scored_on_its_own_task_only_and_not_trained_again(tmp_path: Path) -> None:
    tuned = FineTuned(tmp_path / "mt", model=None, tokenizer=None, task=get_task("multi30k"))
    with pytest.raises(ConfigError, match=r"mt was fine-tuned on multi30k/de-en, not glue/sst2: .*--task multi30k/de-en"):
        lmkit.evaluate(tuned, task="glue/sst2", data=GLUE)
    with pytest.raises(ConfigError, match=r"scored as it is, without training; max_steps would train it"):
        lmkit.evaluate(tuned, task="multi30k", data=MULTI30K, max_steps=5)


def test_lmeval_hands_a_fine_tuned_model_of_the_notebook_to_evaluate(ip, monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    import numpy as np

    import lmkit.evaluation.evaluator as evaluator
    from lmkit.evaluation.result import EvalResult

    seen: list[Any] = []

    def fake_evaluate(run: Any, task: Any, data: Any, **options: Any) -> EvalResult:
        seen.append((run, options.get("num_beams")))
        texts = np.array(["a dog"], object)
        return EvalResult(task, task.eval_split, "mt", {"bleu": 0.0}, texts, texts)

    monkeypatch.setattr(evaluator, "evaluate", fake_evaluate)
    ip.user_ns["mt"] = tuned = FineTuned(tmp_path / "mt", model=None, tokenizer=None, task=get_task("multi30k"))
    ip.run_line_magic("lmeval", f"mt --task multi30k --data {MULTI30K} --set num_beams=4 -o beams")
    assert seen == [(tuned, 4)] and isinstance(ip.user_ns["beams"], EvalResult)


def test_the_task_of_a_fine_tuned_folder_is_read_without_loading_it(tmp_path: Path) -> None:
    from lmkit import api

    assert api.finetuned_task(_old_scratch_folder(tmp_path / "old")) == "glue/sst2"
    assert api.finetuned_task(tmp_path) is None  # no fine-tuning there
