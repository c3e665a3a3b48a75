"""Summarization on a real corpus: SciTLDR-A (abstract -> its authors' one-sentence TLDR), read from
the files as distributed, fine-tuned from scratch and from a GPT-2 folder, scored with ROUGE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lmkit
from lmkit.errors import DataError
from lmkit.evaluation.loaders import load_split

SAMPLE = Path(lmkit.__file__).parent / "data" / "sample" / "scitldr"
ROUGE = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def test_scitldr_reads_each_abstract_and_its_authors_tldr() -> None:
    test = load_split("summarization/scitldr", SAMPLE, "test")
    assert len(test) == 8 and len(load_split("scitldr", SAMPLE, "train")) == 48
    assert test.text_a[0].startswith("Incremental class learning involves sequentially learning classes in bursts")
    # the sentences of the abstract are joined by spaces, never run together
    assert "same class. This violates" in test.text_a[0]
    # the authors' TLDR is the reference (dev and test lines list the reviewers' TLDRs after it)
    assert test.text_b[0].startswith("FearNet is a memory efficient neural-network")


def test_a_scitldr_line_without_its_lists_names_the_file_and_row(tmp_path: Path) -> None:
    good = (SAMPLE / "dev.jsonl").read_text(encoding="utf-8").splitlines()[0]
    bad = json.dumps({"source": "one string, not a list of sentences", "target": ["a tldr"]})
    (tmp_path / "dev.jsonl").write_text(good + "\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev\.jsonl, row 2: expected the lists 'source'.*got str and list"):
        load_split("scitldr", tmp_path, "dev")


@pytest.mark.slow
def test_scitldr_trains_from_scratch_and_reports_rouge(tmp_path: Path) -> None:
    result = lmkit.evaluate("scratch", task="scitldr", data=SAMPLE, arch="gpt", tokenizer="word", vocab_size=2000,
                            embed_dim=32, layers=1, heads=2, max_length=96, batch_size=8, max_steps=3,
                            max_new_tokens=12)
    assert result.split == "test" and result.training["train_examples"] == 48
    assert list(result.metrics)[:4] == list(ROUGE)  # ROUGE first: the task's main scores
    assert all(0.0 <= result.metrics[k] <= 1.0 for k in ROUGE) and 0.0 <= result.metrics["bleu"] <= 100.0
    rows = (result.save(tmp_path) / "predictions.tsv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 9 and rows[1].split("\t")[2].startswith("FearNet is a memory efficient")


@pytest.mark.slow
def test_scitldr_fine_tunes_a_gpt2_folder_and_reports_rouge(tmp_path: Path) -> None:
    from hf_checkpoints import gpt2_folder

    # the tiny tokenizer spells scientific English almost byte by byte: 384 positions hold a TLDR
    folder = gpt2_folder(tmp_path / "gpt2", positions=384)
    result = lmkit.evaluate(str(folder), task="scitldr", data=SAMPLE, max_length=320, batch_size=8, max_steps=2,
                            max_new_tokens=8)
    assert result.training["steps"] == 2 and len(result.predictions) == 8
    assert all(0.0 <= result.metrics[k] <= 1.0 for k in ROUGE)
