"""Evaluation tasks and loaders: GLUE TSV quirks, aclImdb, datasets folders, and every bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lmkit.errors import DataError, RegistryError
from lmkit.evaluation.loaders import load_split
from lmkit.evaluation.tasks import get_task
from lmkit.registry import tasks

EVAL = Path(__file__).parent / "fixtures" / "eval"
GLUE = EVAL / "glue"
IMDB = EVAL / "imdb"


def test_every_glue_task_and_imdb_is_registered() -> None:
    names = set(tasks)
    assert {"glue/cola", "glue/sst2", "glue/mrpc", "glue/qqp", "glue/stsb", "glue/mnli",
            "glue/qnli", "glue/rte", "glue/wnli", "imdb"} <= names
    stsb = get_task("glue/stsb")
    assert stsb.shape.loss == "squared_error" and stsb.shape.num_outputs(stsb) == 1
    assert not stsb.shape.has("class_labels") and get_task("glue/sst2").shape.has("class_labels")
    assert get_task("glue/mnli").splits == ("train", "dev_matched", "dev_mismatched")
    assert get_task("glue/mrpc").is_pair and not get_task("glue/sst2").is_pair
    assert get_task("SST-2").name == "glue/sst2"  # aliases, case-insensitive


def test_unknown_task_suggests_close_names() -> None:
    with pytest.raises(RegistryError, match=r"unknown task 'glue/sst3' \(did you mean 'glue/sst2'") as err:
        get_task("glue/sst3")
    assert "imdb" in str(err.value)  # lists what is available


def test_sst2_header_and_trailing_spaces() -> None:
    dev = load_split("glue/sst2", GLUE, "dev")
    assert len(dev) == 120 and dev.text_b is None
    assert dev.text_a[0] == "it 's a charming and often affecting journey . "
    assert dev.labels.dtype == np.int64 and set(dev.labels) == {0, 1}
    # the task folder itself works as well as the GLUE root, and "validation" means "dev"
    assert load_split("glue/sst2", GLUE / "SST-2", "validation").text_a == dev.text_a


def test_mrpc_bom_and_unbalanced_quotes_keep_every_row() -> None:
    dev = load_split("glue/mrpc", GLUE, "dev")
    source_rows = (GLUE / "MRPC" / "dev.tsv").read_bytes().decode("utf-8-sig").strip("\n").count("\n")
    assert len(dev) == source_rows == 60  # a CSV reader with quoting on merges rows here
    assert dev.text_b[0] == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert dev.labels[:3].tolist() == [1, 0, 0]


def test_cola_without_header_or_final_newline() -> None:
    dev = load_split("glue/cola", GLUE, "dev")
    last_line = (GLUE / "CoLA" / "dev.tsv").read_text(encoding="utf-8").split("\n")[-1]
    assert len(dev) == 60 and dev.text_a[-1] == last_line.split("\t")[3]
    assert set(dev.labels.tolist()) == {0, 1}


def test_imdb_layout_labels_and_br_removed() -> None:
    test = load_split("imdb", IMDB)  # default split: test
    assert test.split == "test" and len(test) == 16
    assert test.labels.tolist() == [0] * 8 + [1] * 8
    assert not any("<br" in t for t in test.text_a)


def test_hf_save_to_disk_and_parquet(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence1": ["a b", "c"], "sentence2": ["d", "e f"], "label": [1, 0], "idx": [0, 1]}),
        "validation": datasets.Dataset.from_dict({"sentence1": ["x"], "sentence2": ["y"], "label": [1], "idx": [0]}),
    })
    ds.save_to_disk(str(tmp_path / "mrpc"))
    dev = load_split("glue/mrpc", tmp_path / "mrpc", "dev")
    assert (dev.text_a, dev.text_b, dev.labels.tolist()) == (["x"], ["y"], [1])
    ds["train"].to_parquet(str(tmp_path / "pq" / "train-00000-of-00001.parquet"))
    train = load_split("glue/mrpc", tmp_path / "pq", "train")
    assert train.text_b == ["d", "e f"] and train.labels.tolist() == [1, 0]


def test_hub_offline_error_says_how_to_use_local_files(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        load_split("glue/sst2", None, "dev")
    message = str(err.value)
    assert "could not load glue/sst2 from the Hugging Face Hub" in message
    assert "Offline, point lmkit at local files" in message and "GLUE/SST-2/dev.tsv" in message


# -- bad input: each message names what was wrong and what is expected --------------------------
def test_folder_missing_expected_files_names_the_layout(tmp_path: Path) -> None:
    (tmp_path / "other.tsv").write_text("a\tb\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_split("glue/sst2", tmp_path, "dev")
    message = str(err.value)
    assert f"no glue/sst2 'dev' data in '{tmp_path}'" in message
    assert str(tmp_path / "SST-2" / "dev.tsv") in message
    assert "official GLUE layout: <glue>/SST-2/{train.tsv, dev.tsv}" in message
    with pytest.raises(DataError, match="does not exist"):
        load_split("glue/sst2", tmp_path / "nope", "dev")


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "dev.tsv").write_text("sentence\tlabel\ngood film\t1\nno label column here\nbad\t0\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_split("glue/sst2", tmp_path, "dev")
    assert f"{folder / 'dev.tsv'}, line 3: malformed row: expected 2 tab-separated columns, found 1" in str(err.value)


def test_label_outside_label_set(tmp_path: Path) -> None:
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "dev.tsv").write_text("sentence\tlabel\ngood\t1\nodd\t2\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_split("glue/sst2", tmp_path, "dev")
    assert f"{folder / 'dev.tsv'}, line 3: label '2' is not in the label set of glue/sst2: 0, 1" in str(err.value)
    stsb = tmp_path / "STS-B"
    stsb.mkdir()
    (stsb / "dev.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t7.5\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: score '7.5' of glue/stsb must be a number in \[0.0, 5.0\]"):
        load_split("glue/stsb", tmp_path, "dev")


def test_pair_task_given_one_text_column(tmp_path: Path) -> None:
    folder = tmp_path / "MRPC"
    folder.mkdir()
    shutil.copy(GLUE / "SST-2" / "dev.tsv", folder / "dev.tsv")  # single-sentence file under MRPC
    with pytest.raises(DataError) as err:
        load_split("glue/mrpc", tmp_path, "dev")
    message = str(err.value)
    assert "glue/mrpc is a sentence-pair task, but the data has one text column" in message
    assert "'#1 String' and '#2 String'" in message
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"sentence": ["a"], "label": [1]}).to_parquet(str(tmp_path / "one.parquet"))
    with pytest.raises(DataError, match="glue/rte is a sentence-pair task, but the data has one text column"):
        load_split("glue/rte", tmp_path / "one.parquet", "dev")


def test_empty_split(tmp_path: Path) -> None:
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "dev.tsv").write_text("sentence\tlabel\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"split 'dev' of glue/sst2 in '.*dev.tsv' has no examples"):
        load_split("glue/sst2", tmp_path, "dev")


def test_imdb_folder_given_for_a_glue_task_and_back() -> None:
    with pytest.raises(DataError) as err:
        load_split("glue/sst2", IMDB, "dev")
    assert "holds the IMDb aclImdb layout" in str(err.value) and "but glue/sst2 is a GLUE task" in str(err.value)
    with pytest.raises(DataError, match="holds GLUE .tsv files, but imdb reads the IMDb layout"):
        load_split("imdb", GLUE, "test")


def test_unknown_split_and_unlabelled_hub_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"task glue/sst2 has no split 'trian' \(did you mean 'train'\?\); its splits are: train, dev"):
        load_split("glue/sst2", GLUE, "trian")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"sentence": ["a"], "label": [-1]}).to_parquet(str(tmp_path / "test.parquet"))
    with pytest.raises(DataError, match="-1 marks the unlabeled GLUE test split"):
        load_split("glue/sst2", tmp_path / "test.parquet", "dev")


# The official headers of the GLUE tasks without a fixture (as in the distributed GLUE zip).
OFFICIAL = {
    "glue/qqp": ("QQP", "dev", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                 ["7", "1", "2", "A?", "B?", "1"]),
    "glue/stsb": ("STS-B", "dev", ["index", "genre", "filename", "year", "old_index", "source1",
                                   "source2", "sentence1", "sentence2", "score"],
                  ["0", "main-captions", "MSRvid", "2012test", "0", "none", "none", "A", "B", "3.800"]),
    "glue/mnli": ("MNLI", "dev_mismatched", ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                                             "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
                                             "sentence1", "sentence2", "label1", "label2", "label3",
                                             "label4", "label5", "gold_label"],
                  ["0", "1", "1n", "letters", "( A )", "( B )", "(ROOT A)", "(ROOT B)", "A", "B",
                   "neutral", "neutral", "neutral", "neutral", "contradiction", "neutral"]),
    "glue/qnli": ("QNLI", "dev", ["index", "question", "sentence", "label"], ["0", "A?", "B", "not_entailment"]),
    "glue/rte": ("RTE", "dev", ["index", "sentence1", "sentence2", "label"], ["0", "A", "B", "entailment"]),
    "glue/wnli": ("WNLI", "dev", ["index", "sentence1", "sentence2", "label"], ["0", "A", "B", "1"]),
}


@pytest.mark.parametrize("name", sorted(n for n in tasks if n.startswith("glue/")))
def test_every_glue_task_reads_its_official_columns(name: str, tmp_path: Path) -> None:
    task = get_task(name)
    if name not in OFFICIAL:  # cola, sst2, mrpc: real fixtures above
        assert load_split(task, GLUE, "dev").labels.size > 0
        return
    folder, split, header, row = OFFICIAL[name]
    (tmp_path / folder).mkdir()
    (tmp_path / folder / f"{split}.tsv").write_text("\t".join(header) + "\n" + "\t".join(row) + "\n", encoding="utf-8")
    examples = load_split(task, tmp_path, split)
    assert examples.text_a[0].startswith("A") and examples.text_b is not None and examples.text_b[0].startswith("B")
    expected = task.labels.index(row[-1]) if task.shape.has("class_labels") else float(row[-1])
    assert examples.labels.tolist() == [pytest.approx(expected)]


def test_offline_hub_fails_in_seconds_with_the_local_files_advice(monkeypatch) -> None:
    import time

    from lmkit.errors import DataError
    from lmkit.evaluation.loaders import load_split
    from lmkit.evaluation.tasks import get_task

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(DataError, match=r"no connection to 127.0.0.1:9.*point lmkit at local files"):
        load_split(get_task("glue/sst2"), None, "validation")
    assert time.monotonic() - t0 < 10
