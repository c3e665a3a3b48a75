"""SuperGLUE tasks read the official JSONL layout, with file-and-line errors for bad lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmkit.errors import DataError
from lmkit.evaluation.loaders import find_task_data, load_split
from lmkit.evaluation.tasks import get_task
from lmkit.registry import tasks

FIXTURES = Path(__file__).parent / "fixtures"
SUPERGLUE = FIXTURES / "superglue"
SLICES = FIXTURES / "superglue_slices"
NAMES = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")


def test_every_superglue_task_is_registered_with_its_metric() -> None:
    assert {e.name for e in tasks.list("superglue/*")} == {f"superglue/{n}" for n in NAMES}
    for name in NAMES:
        task = get_task(f"superglue/{name}")
        assert task.metric_for("val") == ("super_glue", name)
        assert task.benchmark == "SuperGLUE" and task.choices is not None
    assert get_task("superglue/cb").resolve_split("validation") == "val"


# Byte-for-byte first lines of the official files (tests/fixtures/superglue_slices/README.md).
# Expected counts, by reading the JSON: one example per line, except MultiRC (one per answer
# option: val's 2 passages hold 17 questions with 87 answers, dev32's 3 hold 3 with 21) and
# ReCoRD (one per query: 1 query on each of its 4 lines).
@pytest.mark.parametrize("name,split,count", [
    ("boolq", "train32", 6), ("boolq", "dev32", 6), ("cb", "dev32", 10), ("copa", "train", 20),
    ("multirc", "val", 87), ("multirc", "dev32", 21), ("record", "dev32", 4), ("rte", "train32", 10),
    ("wic", "train", 12), ("wic", "val", 12), ("wsc", "train", 12), ("wsc", "val", 12)])
def test_official_file_slices_load_with_their_exact_counts(name: str, split: str, count: int) -> None:
    examples = load_split(f"superglue/{name}", SLICES, split)
    assert len(examples) == count
    assert (examples.labels >= 0).all()
    if name == "multirc":
        assert len(set(examples.groups.tolist())) == {"val": 17, "dev32": 3}[split]


def test_fixture_examples_keep_labels_spans_and_groups() -> None:
    boolq = load_split("superglue/boolq", SUPERGLUE, "val")
    first = json.loads((SUPERGLUE / "BoolQ" / "val.jsonl").read_text().split("\n")[0])
    assert boolq.text_a[0] == first["passage"] and boolq.text_b[0] == first["question"]
    assert get_task("superglue/boolq").labels[boolq.labels[0]] == json.dumps(first["label"])
    cb = load_split("superglue/cb", SUPERGLUE / "CB", "val")  # the task folder itself
    assert [cb.task.labels[i] for i in cb.labels] == [
        json.loads(line)["label"] for line in (SUPERGLUE / "CB" / "val.jsonl").read_text().splitlines()]
    wic = load_split("superglue/wic", SUPERGLUE)  # the default split is val
    row = json.loads((SUPERGLUE / "WiC" / "val.jsonl").read_text().split("\n")[0])
    span = row["sentence1"][row["start1"]:row["end1"]]
    assert wic.text_a[0] == row["sentence1"] and wic.records[0]["target"] == span
    assert wic.records[0]["spans"] == [(0, row["start1"], row["end1"]), (1, row["start2"], row["end2"])]
    wsc = load_split("superglue/wsc", SUPERGLUE, "val")
    text = wsc.text_a[1]
    assert wsc.text_b is None and [text[s:e] for _, s, e in wsc.records[1]["spans"]] == ["Mr. Moncrieff", "his"]
    multirc = load_split("superglue/multirc", SUPERGLUE, "val")
    lines = [json.loads(x) for x in (SUPERGLUE / "MultiRC" / "val.jsonl").read_text().splitlines()]
    answers = [a["label"] for r in lines for q in r["passage"]["questions"] for a in q["answers"]]
    assert multirc.labels.tolist() == answers
    sizes = [len(q["answers"]) for r in lines for q in r["passage"]["questions"]]
    assert np.bincount(multirc.groups).tolist() == sizes
    record = load_split("superglue/record", SUPERGLUE, "val")
    for i, rec in enumerate(record.records):
        assert rec["entities"][record.labels[i]] in rec["answers"]
    copa = load_split("superglue/copa", SUPERGLUE, "dev32")
    assert copa.source.endswith("fewglue_dev32.jsonl") and len(copa) == 8


def _write(folder: Path, task_folder: str, lines: list[str], name: str = "val.jsonl") -> Path:
    (folder / task_folder).mkdir(parents=True, exist_ok=True)
    (folder / task_folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _lines(task_folder: str) -> list[dict]:
    return [json.loads(x) for x in (SUPERGLUE / task_folder / "val.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("task_folder,task,edit,message", [
    ("BoolQ", "boolq", lambda r: r.pop("question"), r"line 2: missing key 'question'"),
    ("BoolQ", "boolq", lambda r: r.update(label=1), r"line 2: label 1 of superglue/boolq must be a JSON boolean"),
    ("BoolQ", "boolq", lambda r: r.update(label="true"), r"must be a JSON boolean .* got str"),
    ("CB", "cb", lambda r: r.update(label="maybe"), r"line 2: label 'maybe' is not in the label set"),
    ("COPA", "copa", lambda r: r.update(label=True), r"line 2: label True of superglue/copa must be a JSON integer"),
    ("COPA", "copa", lambda r: r.update(question="why"), r"line 2: 'question' must be \"cause\" or \"effect\""),
    ("WiC", "wic", lambda r: r.update(end1=999), r"line 2: offsets start1=\d+, end1=999 are outside sentence1"),
    ("WiC", "wic", lambda r: r.update(start2="3"), r"line 2: 'start2' must be int, got str"),
    ("WSC", "wsc", lambda r: r["target"].update(span2_index=500), r"line 2: span2_index 500 .* outside the text"),
    ("MultiRC", "multirc", lambda r: r["passage"]["questions"][0]["answers"][0].pop("text"),
     r"line 2: missing key 'text' of an answer"),
    ("ReCoRD", "record", lambda r: r["passage"]["entities"][0].update(end=10**6), r"line 2: entity offsets"),
    ("RTE", "rte", lambda r: r.pop("label"), r"line 2: missing key 'label'"),
])
def test_bad_lines_name_the_file_and_line(tmp_path: Path, task_folder: str, task: str, edit, message: str) -> None:
    rows = _lines(task_folder)[:3]
    edit(rows[1])
    _write(tmp_path, task_folder, [json.dumps(r) for r in rows])
    with pytest.raises(DataError, match=message) as info:
        load_split(f"superglue/{task}", tmp_path, "val")
    assert str(tmp_path / task_folder / "val.jsonl") in str(info.value)


def test_bad_json_empty_split_and_missing_files(tmp_path: Path) -> None:
    _write(tmp_path, "RTE", ['{"premise": "a", "hypothesis": "b", "label": "entailment"', ""])
    with pytest.raises(DataError, match=r"val.jsonl, line 1: not valid JSON"):
        load_split("superglue/rte", tmp_path)
    _write(tmp_path, "RTE", [""])
    with pytest.raises(DataError, match=r"split 'val' of superglue/rte has no examples"):
        load_split("superglue/rte", tmp_path)
    with pytest.raises(DataError, match=r"no superglue/rte 'train' data .* expects the official SuperGLUE layout"):
        load_split("superglue/rte", tmp_path, "train")
    with pytest.raises(DataError, match=r"has no split 'dev_matched'"):
        load_split("superglue/rte", tmp_path, "dev_matched")


def test_test_files_without_labels_load_with_label_minus_one(tmp_path: Path) -> None:
    rows = _lines("RTE")[:2]
    for r in rows:
        r.pop("label")
    _write(tmp_path, "RTE", [json.dumps(r) for r in rows], "test.jsonl")
    assert load_split("superglue/rte", tmp_path, "test").labels.tolist() == [-1, -1]


def test_glue_folder_for_a_superglue_task_and_the_reverse(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"holds GLUE .tsv files, but superglue/rte reads JSONL files"):
        load_split("superglue/rte", FIXTURES / "eval" / "glue")
    with pytest.raises(DataError, match=r"holds JSONL files \(the SuperGLUE layout\), but glue/rte is a GLUE task"):
        load_split("glue/rte", SUPERGLUE)
    with pytest.raises(DataError, match=r"val.parquet: not a readable parquet file"):
        (tmp_path / "val.parquet").write_bytes(b"")
        load_split("superglue/wic", tmp_path / "val.parquet")


def test_find_task_data_looks_in_superglue_subfolders(tmp_path: Path) -> None:
    shutil.copytree(SUPERGLUE, tmp_path / "superglue")
    assert find_task_data("superglue/wic", tmp_path) == tmp_path / "superglue"
    assert len(load_split("superglue/wic", find_task_data("superglue/wic", tmp_path))) == 8


def test_record_queries_without_answers_refuse_to_be_scored(tmp_path: Path) -> None:
    from lmkit.evaluation.result import score

    rows = _lines("ReCoRD")[:1]
    for qa in rows[0]["qas"]:
        qa.pop("answers")
    _write(tmp_path, "ReCoRD", [json.dumps(r) for r in rows], "test.jsonl")
    examples = load_split("superglue/record", tmp_path, "test")
    assert examples.labels.tolist() == [-1] and "answers" not in examples.records[0]
    with pytest.raises(DataError, match="has queries without answers"):
        score(examples.task, "test", np.array([0]), examples.labels, examples)


def test_flat_tasks_also_read_datasets_parquet(tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame({"premise": ["It rains.", "It is dry."], "hypothesis": ["It is wet.", "It is wet."],
                  "idx": [0, 1], "label": [0, 1]}).to_parquet(tmp_path / "validation-00000.parquet")
    cb = load_split("superglue/cb", tmp_path, "val")
    assert cb.text_a == ["It rains.", "It is dry."] and cb.text_b == ["It is wet.", "It is wet."]
    assert [cb.task.labels[i] for i in cb.labels] == ["entailment", "contradiction"]


def test_overlap_counts_scored_examples_found_in_the_training_split() -> None:
    train = load_split("superglue/copa", SUPERGLUE, "train")
    assert train.overlap(train) == 8
    assert load_split("superglue/copa", SUPERGLUE, "val").overlap(train) == 0
    assert train.take([2, 5]).overlap(train) == 2
    # FewGLUE's COPA dev32 lies inside the full COPA train: of dev32's first 8 lines, the 6th is
    # line 19 of train.jsonl (the others are lines 114, 115, 147, 189, 198, 286, 336)
    first_train = load_split("superglue/copa", SLICES, "train")
    assert load_split("superglue/copa", SLICES, "dev32").overlap(first_train) == 1
