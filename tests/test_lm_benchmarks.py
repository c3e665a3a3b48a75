"""Language-model benchmarks read from their official file formats, scored zero-shot."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lmkit.errors import DataError
from lmkit.evaluation.evaluator import evaluate
from lmkit.evaluation.loaders import load_split
from lmkit.evaluation.tasks import get_task
from lmkit.evaluation.zeroshot import choice_pairs
from lmkit.registry import architectures, tokenizers

DATA = Path(__file__).parent / "fixtures" / "lm_benchmarks"


def test_hellaswag_is_prompted_as_the_harness_prompts_it() -> None:
    val = load_split("hellaswag", DATA, "val")
    assert val.labels.tolist() == [3, 0, 0]
    pairs = choice_pairs(val)
    assert pairs[0][3] == ("Removing ice from car: Then, the man writes over the snow covering the window of a car, "
                           "and a woman wearing winter clothes smiles. Then", " , the man continues removing the "
                                                                                "snow on his car.")
    # [title] becomes a sentence break, other [tags] go
    assert pairs[1][0][0] == "Home and Garden: How to plant a tomato. Dig a hole. Place the seedling deep"
    assert pairs[1][3][1] == " under the bed Water it."


def test_piqa_reads_its_separate_label_file_and_arc_its_answer_keys() -> None:
    piqa = load_split("piqa", DATA, "dev")
    assert piqa.labels.tolist() == [0, 1, 0]
    assert choice_pairs(piqa)[1][1] == ("Question: To open a jar with a tight lid,\nAnswer:",
                                        " run the lid under hot water, then twist.")
    arc = load_split("arc_easy", DATA, "test")
    assert arc.labels.tolist() == [0, 0, 0] and [len(p) for p in choice_pairs(arc)] == [4, 3, 5]


def test_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    shutil.copy(DATA / "piqa" / "valid.jsonl", tmp_path / "valid.jsonl")
    with pytest.raises(DataError, match=r"valid.jsonl has no labels: expected .*valid-labels.lst"):
        load_split("piqa", tmp_path, "dev")
    (tmp_path / "ARC-Easy-Test.jsonl").write_text(
        '{"question": {"stem": "Q?", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "B"}\n')
    with pytest.raises(DataError, match=r"ARC-Easy-Test.jsonl, line 1: answerKey 'B' is not one of the choices"):
        load_split("arc_easy", tmp_path, "test")
    with pytest.raises(DataError, match=r"no hellaswag 'val' data in .*hellaswag_val.jsonl"):
        load_split("hellaswag", tmp_path, "val")


@pytest.fixture(scope="module")
def char_gpt() -> SimpleNamespace:
    import keras

    keras.utils.set_random_seed(0)
    text = "".join(c for t in ("hellaswag", "piqa", "arc_easy")
                   for pairs in choice_pairs(load_split(t, DATA, get_task(t).eval_split)) for p in pairs for c in p)
    tokenizer = tokenizers.get("char").fit([text])
    model = architectures.get("gpt")(tokenizer.vocab_size, embed_dim=16, layers=1, heads=2, seq_len=64)
    model(np.zeros((1, 4), np.int32))
    return SimpleNamespace(model=model, tokenizer=tokenizer, dir="char-gpt")


@pytest.mark.parametrize("task", ["hellaswag", "piqa", "arc_easy"])
def test_zero_shot_scores_each_benchmark_with_its_chance_beside(char_gpt: SimpleNamespace, task: str) -> None:
    result = evaluate(char_gpt, task, DATA, method="zeroshot")
    assert 0.0 <= result.metrics["accuracy"] <= 1.0 and "accuracy" in result.intervals
    widths = [len(r["choices"]) for r in result.examples.records]
    assert result.baselines["chance"]["accuracy"] == pytest.approx(np.mean([1 / w for w in widths]), abs=0.2)
