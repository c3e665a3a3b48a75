"""Fine-tuning pretrained checkpoints through `lmkit.evaluate` (the one engine): BERT's pair
encoding, the standard recipe as defaults, learning on an easy task, and the CLI end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hf_checkpoints import bert_folder, wordpiece_tokenizer

import lmkit
from lmkit.evaluation.encoding import encode_examples
from lmkit.evaluation.loaders import Examples
from lmkit.tokenizers import PretrainedTokenizer

SST2 = Path(__file__).parent / "fixtures" / "eval" / "glue" / "SST-2"


def test_pairs_are_encoded_as_cls_a_sep_b_sep_truncated_longest_first() -> None:
    tokenizer = PretrainedTokenizer(wordpiece_tokenizer()._tokenizer)
    cls, sep = tokenizer.token_id("[CLS]"), tokenizer.token_id("[SEP]")
    a, b = "the cat sat on the mat and the dog sat on the log", "good movies"
    examples = Examples("glue/mrpc", "train", "test", [a, "ok"], [b, "the cat"], np.array([1, 0]))
    encoded = encode_examples(examples, tokenizer, max_length=12)
    first = encoded.ids[0].tolist()
    b_ids = tokenizer.encode(b)
    assert len(first) == 12 and first[0] == cls and first[-1] == sep
    # the longer segment gave up its tail; the short one is whole
    assert first[-len(b_ids) - 2:] == [sep, *b_ids, sep]
    assert first[1:-len(b_ids) - 2] == tokenizer.encode(a)[:12 - 3 - len(b_ids)]
    assert encoded.ids[1].tolist() == [cls, *tokenizer.encode("ok"), sep, *tokenizer.encode("the cat"), sep]


def test_head_tail_truncation_keeps_a_long_review_s_start_and_its_verdict() -> None:
    from lmkit.evaluation.encoding import head_and_tail

    tokenizer = PretrainedTokenizer(wordpiece_tokenizer()._tokenizer)
    cls, sep = tokenizer.token_id("[CLS]"), tokenizer.token_id("[SEP]")
    review = " ".join(["the cat sat on the mat"] * 20 + ["good movies"])
    examples = Examples("imdb", "train", "test", [review, "ok"], None, np.array([1, 0]))
    full = encode_examples(examples, tokenizer, max_length=None)
    cut = head_and_tail(full, 16)
    first = cut.ids[0].tolist()
    assert len(first) == 16 and first[0] == cls and first[-1] == sep
    assert first[:4] == full.ids[0].tolist()[:4]                       # a quarter from the start
    assert first[-4:] == [*tokenizer.encode("good movies"), sep][-4:]  # the rest from the end
    assert first[4:] == full.ids[0].tolist()[-12:]
    assert cut.ids[1].tolist() == [cls, *tokenizer.encode("ok"), sep]  # short texts are whole


def test_head_tail_truncation_is_refused_for_pairs() -> None:
    mrpc = Path(__file__).parent / "fixtures" / "eval" / "glue"
    with pytest.raises(lmkit.ConfigError, match=r"truncation='head_tail' cuts single texts; glue/mrpc"):
        lmkit.evaluate("scratch", task="glue/mrpc", data=mrpc, truncation="head_tail")


def _easy_task(folder: Path, seed: int = 0) -> Path:
    """SST-2-shaped data whose label is whether "good" or "bad" is in the sentence."""
    rng = np.random.default_rng(seed)
    words = "the cat sat on mat dog log quick brown fox river people happy".split()
    folder.mkdir()
    for split, n in (("train", 240), ("dev", 80)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            label = int(rng.integers(2))
            filler = list(rng.choice(words, size=int(rng.integers(2, 12))))
            filler.insert(int(rng.integers(len(filler) + 1)), "good" if label else "bad")
            lines.append(f"{' '.join(filler)}\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.slow
def test_a_pretrained_encoder_fine_tunes_with_the_standard_recipe_and_learns(tmp_path: Path) -> None:
    checkpoint = bert_folder(tmp_path / "bert")
    data = _easy_task(tmp_path / "sst2")
    # 120 steps: at 60, dev accuracy ranged 0.61-0.95 over seeds (dropout masks, packed shapes)
    result = lmkit.evaluate(str(checkpoint), task="glue/sst2", data=str(data), max_steps=120,
                            batch_size=16, learning_rate=1e-3)
    cfg = result.config
    # the recipe fills what was not set; what was set wins
    assert cfg["pooling"] == "cls" and cfg["backbone_lr_multiplier"] == 1.0
    assert cfg["schedule"] == "warmup_linear" and cfg["learning_rate"] == 1e-3
    # chance is 0.5: 0.7 of 80 examples by chance has p < 0.001 (1.0 on seeds 0-7 at 120 steps)
    assert result.metrics["accuracy"] >= 0.7
    assert result.training["steps"] == 120


@pytest.mark.slow
def test_a_mixed_bfloat16_fine_tuning_computes_in_bfloat16_and_learns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmkit.build import copy_model

    checkpoint = bert_folder(tmp_path / "bert")
    data = _easy_task(tmp_path / "sst2")
    copies: list = []  # the backbones the fine-tuning built
    monkeypatch.setattr("lmkit.build.copy_model",
                        lambda *a, **k: copies.append(copy_model(*a, **k)) or copies[-1])
    result = lmkit.evaluate(str(checkpoint), task="glue/sst2", data=str(data), max_steps=120,
                            batch_size=16, learning_rate=1e-3, precision="mixed_bfloat16")
    [backbone] = copies
    assert backbone.compute_dtype == "bfloat16"
    assert {v.dtype for v in backbone.trainable_variables} == {"float32"}  # what AdamW updates
    assert result.config["precision"] == "mixed_bfloat16"
    assert result.metrics["accuracy"] >= 0.7  # the float32 test's bar (chance: 0.5)


@pytest.mark.slow
def test_eval_dry_run_prints_the_recipe_the_task_and_the_derived_options(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lmkit.cli import main

    checkpoint = bert_folder(tmp_path / "bert")
    data = _easy_task(tmp_path / "sst2")  # 240 training examples
    out = tmp_path / "out"
    assert main(["eval", str(checkpoint), "--task", "glue/sst2", "--data", str(data), "--dry-run",
                 "--set", "epochs=2", "--set", "batch_size=16", "--set", "learning_rate=1e-3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    shown = {line.split(" = ")[0]: line.split(" = ", 1)[1] for line in printed.splitlines()[1:] if line}
    assert printed.splitlines()[0] == f"# {checkpoint} on glue/sst2" and not out.exists()
    assert shown["pooling"].split() == ['"cls"', "#", "recipe:", "pretrained", "encoder"]
    assert shown["backbone_lr_multiplier"].startswith("1.0 ") and "recipe" in shown["backbone_lr_multiplier"]
    assert shown["learning_rate"].split() == ["0.001", "#", "--set"]  # what the user set wins
    assert shown["loss"].split("#")[1].strip() == "derived: the task's loss"
    # 2 epochs of 240 examples in batches of 16 are 30 steps; 6 % of them warm up
    assert shown["warmup_steps"].split() == ["1", "#", "derived:", "6%", "of", "30", "steps"]


@pytest.mark.slow
def test_lmkit_eval_fine_tunes_minilm_by_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lmkit.cli import main

    out = tmp_path / "out"
    assert main(["eval", "minilm-l6", "--task", "glue/sst2", "--data", str(SST2), "--quiet",
                 "--set", "max_steps=20", "--set", "batch_size=16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model minilm-l6" in printed and "accuracy" in printed
    assert (out / "metrics.json").is_file() and (out / "predictions.tsv").is_file()
