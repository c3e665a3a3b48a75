"""SuperGLUE from `datasets`: rows of the ``super_glue`` configs (parquet, ``save_to_disk`` and
``load_dataset``, the last monkeypatched: the machine is offline) give the same examples as the
official JSONL files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lmkit.errors import DataError
from lmkit.evaluation.loaders import Examples, load_split

SUPERGLUE = Path(__file__).parent / "fixtures" / "superglue"
FOLDERS = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "multirc": "MultiRC", "record": "ReCoRD",
           "rte": "RTE", "wic": "WiC", "wsc": "WSC"}
#: the columns of each `datasets` super_glue config besides idx and label (its loading script)
FEATURES = {"boolq": ["question", "passage"], "cb": ["premise", "hypothesis"], "rte": ["premise", "hypothesis"],
            "copa": ["premise", "choice1", "choice2", "question"],
            "wic": ["word", "sentence1", "sentence2", "start1", "start2", "end1", "end2"],
            "wsc": ["text", "span1_index", "span2_index", "span1_text", "span2_text"]}
CLASSES = {"cb": ["entailment", "contradiction", "neutral"], "rte": ["entailment", "not_entailment"]}


def hub_rows(key: str) -> list[dict[str, Any]]:
    """The fixture's val lines as the `datasets` super_glue config `key` has them: MultiRC a row
    per answer, ReCoRD a row per query with sorted entity and answer strings, labels as class ids."""
    rows = []
    for line in (SUPERGLUE / FOLDERS[key] / "val.jsonl").read_text().splitlines():
        r = json.loads(line)
        if key == "multirc":
            rows += [{"paragraph": r["passage"]["text"], "question": q["question"], "answer": a["text"],
                      "label": int(a["label"]), "idx": {"paragraph": r["idx"], "question": q["idx"], "answer": a["idx"]}}
                     for q in r["passage"]["questions"] for a in q["answers"]]
        elif key == "record":
            text = r["passage"]["text"]
            entities = sorted({text[e["start"]:e["end"] + 1] for e in r["passage"]["entities"]})
            rows += [{"passage": text, "query": qa["query"], "entities": entities,
                      "answers": sorted({a["text"] for a in qa["answers"]}), "idx": {"passage": r["idx"], "query": qa["idx"]}}
                     for qa in r["qas"]]
        else:
            r.update(r.get("target", {}))
            label = CLASSES[key].index(r["label"]) if key in CLASSES else int(r["label"])
            rows.append({**{f: r[f] for f in FEATURES[key]}, "idx": r["idx"], "label": label})
    return rows


def assert_same_examples(got: Examples, official: Examples) -> None:
    assert got.text_a == official.text_a and got.text_b == official.text_b
    if got.task.shape.has("own_choices"):  # ReCoRD: the same candidates (datasets sorts them); the label is a gold answer
        for g, o in zip(got.records, official.records):
            assert sorted(g["entities"]) == sorted(o["entities"]) and g["answers"] == sorted(set(o["answers"]))
        assert all(r["entities"][y] in r["answers"] for r, y in zip(got.records, got.labels))
        return
    assert got.labels.tolist() == official.labels.tolist()
    if official.groups is not None:
        assert got.groups.tolist() == official.groups.tolist()
    assert [r.get("spans") for r in got.records] == [r.get("spans") for r in official.records]


@pytest.mark.parametrize("key", list(FOLDERS))
def test_every_task_reads_datasets_parquet_save_to_disk_and_the_hub(key: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    official = load_split(f"superglue/{key}", SUPERGLUE, "val")
    table = datasets.Dataset.from_list(hub_rows(key))
    table.to_parquet(str(tmp_path / "validation-00000-of-00001.parquet"))
    assert_same_examples(load_split(f"superglue/{key}", tmp_path, "val"), official)
    datasets.DatasetDict({"validation": table}).save_to_disk(str(tmp_path / "disk"))
    assert_same_examples(load_split(f"superglue/{key}", tmp_path / "disk", "val"), official)

    calls = []

    def load_dataset(path: str, name: str | None = None, split: str | None = None, **kwargs: Any) -> Any:
        calls.append((path, name, split))
        return table

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # no network probe: the fake answers
    from_hub = load_split(f"superglue/{key}", None, "val")
    assert calls == [("aps/super_glue", key, "validation")] and from_hub.source == "hf:aps/super_glue"
    assert_same_examples(from_hub, official)


def test_a_datasets_row_with_a_bad_value_names_the_row(tmp_path: Path) -> None:
    import datasets

    rows = hub_rows("wic")
    rows[3]["end1"] = 10**4
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "validation.parquet"))
    with pytest.raises(DataError, match=r"validation.parquet, row 3: offsets start1=\d+, end1=10000 are outside"):
        load_split("superglue/wic", tmp_path, "val")
    datasets.Dataset.from_list(hub_rows("cb")).to_parquet(str(tmp_path / "cb.parquet"))
    with pytest.raises(DataError, match=r"cb.parquet, row 0: not a row of the datasets super_glue/wsc config"):
        load_split("superglue/wsc", tmp_path / "cb.parquet", "val")
