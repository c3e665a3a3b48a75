"""A task is a data source plus a shape: a user's own task over CSV / JSONL / parquet files, in
Python or TOML, and each file family read only when the task declares it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lmkit.errors import ConfigError, DataError, RegistryError
from lmkit.evaluation import Task
from lmkit.evaluation.loaders import load_split
from lmkit.evaluation.shapes import Classification, Generation, Regression
from lmkit.evaluation.sources import TableSource
from lmkit.evaluation.tasks import get_task, load_task_file
from lmkit.registry import shapes, tasks

FIXTURES = Path(__file__).parent / "fixtures"
TASKS = FIXTURES / "tasks"
REVIEWS = TASKS / "reviews"
TINY = {"arch": "gpt", "embed_dim": 16, "units": 16, "layers": 1, "heads": 2, "max_length": 96,
        "batch_size": 8, "eval_batch_size": 16, "max_steps": 3, "log_every": 1}


def reviews_task() -> Task:
    return Task("reviews", TableSource(), labels=("neg", "pos"), inputs=("review",), target="sentiment")


def csv_rows(file: Path) -> list[dict[str, str]]:
    with open(file, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_user_classification_task_reads_its_csv_files() -> None:
    task = reviews_task()
    assert task.metrics == ("accuracy",) and task.shape.loss == "cross_entropy"
    dev = load_split(task, REVIEWS, "dev")
    rows = csv_rows(REVIEWS / "dev.csv")
    assert dev.text_a == [r["review"] for r in rows] and dev.text_b is None
    assert [task.labels[i] for i in dev.labels] == [r["sentiment"] for r in rows]
    assert len(load_split(task, REVIEWS, "train")) == 32


def test_the_same_task_reads_jsonl_and_parquet_tables(tmp_path: Path) -> None:
    import pandas as pd

    rows = csv_rows(REVIEWS / "dev.csv")
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    task = reviews_task()
    from_jsonl, from_parquet = load_split(task, tmp_path, "dev"), load_split(task, tmp_path, "train")
    assert from_jsonl.text_a == from_parquet.text_a == [r["review"] for r in rows]
    assert from_jsonl.labels.tolist() == from_parquet.labels.tolist() == [("neg", "pos").index(r["sentiment"])
                                                                         for r in rows]


def test_a_table_without_the_named_columns_says_what_it_has(tmp_path: Path) -> None:
    (tmp_path / "dev.csv").write_text("text,stars\ngood,5\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev.csv: no 'sentiment' column for reviews; columns: text, stars"):
        load_split(reviews_task(), tmp_path, "dev")
    (tmp_path / "dev.csv").write_text("review,sentiment\ngood,great\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev.csv, row 0: label 'great' is not in the label set of reviews: neg, pos"):
        load_split(reviews_task(), tmp_path, "dev")


def test_each_task_reads_only_its_declared_family() -> None:
    # an IMDb task given CSV files is refused (it once fell through to the aclImdb reader)
    with pytest.raises(DataError, match="holds CSV files, but imdb reads the IMDb layout"):
        load_split("imdb", REVIEWS, "test")
    with pytest.raises(DataError, match="holds GLUE .tsv files, but reviews reads CSV, JSONL or parquet tables"):
        load_split(reviews_task(), FIXTURES / "eval" / "glue" / "SST-2", "dev")


def test_a_toml_file_declares_the_same_task() -> None:
    from_file = get_task(TASKS / "reviews.toml")
    assert from_file.labels == ("neg", "pos") and from_file.inputs == ("review",)
    assert from_file.target == "sentiment" and isinstance(from_file.shape, Classification)
    assert load_split(from_file, REVIEWS, "dev").labels.tolist() == load_split(reviews_task(), REVIEWS, "dev").labels.tolist()
    captions = load_task_file(TASKS / "captions.toml")
    assert captions.shape == Generation(max_new_tokens=48) and captions.metrics[0] == "bleu"


def test_a_toml_task_with_a_mistake_names_its_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nlabels = ["a"]\ntarget_column = "y"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.toml: .*target_column"):
        get_task(bad)
    bad.write_text('name = "x"\nshape = "clasification"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.toml: .*did you mean 'classification'"):
        get_task(bad)
    with pytest.raises(ConfigError, match="task file .*missing.toml' does not exist"):
        get_task(tmp_path / "missing.toml")


def test_a_shape_refuses_a_task_it_cannot_be() -> None:
    with pytest.raises(RegistryError, match="task mood is a classification task with no labels"):
        Task("mood", TableSource())
    with pytest.raises(RegistryError, match="task rating is a regression task but names labels a, b"):
        Task("rating", TableSource(), shape=Regression(), labels=("a", "b"))


def test_every_task_s_shape_is_a_registered_shape_with_its_capabilities() -> None:
    assert {e.name for e in shapes.list()} == {"classification", "regression", "multiple_choice", "candidates",
                                               "spans", "generation", "perplexity", "last_word"}
    for entry in tasks.list():
        shape = entry.obj.shape
        assert shapes.entry(shape.name).obj is type(shape), entry.name
    assert get_task("superglue/record").shape.has("own_choices")
    assert not get_task("glue/stsb").shape.has("class_labels")
    assert [get_task(t).shape.has("ranked") for t in ("glue/rte", "superglue/copa", "multi30k/de-en")] == [True, True, False]


@pytest.mark.slow
def test_a_user_task_in_python_fine_tunes_and_scores() -> None:
    import lmkit

    result = lmkit.evaluate("scratch", task=reviews_task(), data=REVIEWS, **TINY)
    labels = [("neg", "pos").index(r["sentiment"]) for r in csv_rows(REVIEWS / "dev.csv")]
    assert result.task.name == "reviews" and result.labels.tolist() == labels
    assert result.metrics == {"accuracy": pytest.approx(np.mean(result.predictions == np.asarray(labels)))}
    assert result.confusion_matrix.sum() == len(labels) and result.training["steps"] == 3


@pytest.mark.slow
def test_lmkit_eval_takes_toml_tasks_over_csv_and_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    args = ["eval", "scratch", "--task", f"{TASKS / 'reviews.toml'},{TASKS / 'captions.toml'}", "--data", str(TASKS),
            "--quiet", *[f"--set={k}={v}" for k, v in TINY.items()]]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "reviews (dev, 12 examples" in out and "captions (dev, 6 examples" in out
    assert "accuracy" in out and "bleu" in out and "rouge1" in out
