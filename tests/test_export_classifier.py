"""`lmkit export --format hf` of a classifier fine-tuned on a `bert` backbone: `transformers`
loads it as BertForSequenceClassification with the same logits (single sentences and pairs with
token types), and its tokenizer gives the ids lmkit fine-tuned on; the refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hf_checkpoints import bert_folder

import lmkit
from lmkit.cli import main
from lmkit.errors import ExportError, RunError
from lmkit.evaluation.heads import SequenceClassifier

EVAL = Path(__file__).parent / "fixtures" / "eval" / "glue"


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bert_folder(tmp_path_factory.mktemp("ckpt") / "tiny-bert")


def _transformers_logits(folder: Path, a: list[str], b: list[str] | None) -> np.ndarray:
    import torch
    import transformers

    model = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    inputs = tok(a, b, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits.numpy()


def _lmkit_logits(model, tokenizer, a: list[str], b: list[str] | None) -> np.ndarray:
    rows = tokenizer.encode_inputs(a, b, max_length=64)
    lengths = np.asarray([len(r) for r in rows], np.int32)
    tokens = np.zeros((len(rows), int(lengths.max())), np.int32)
    for i, r in enumerate(rows):
        tokens[i, :len(r)] = r
    return np.asarray(model((tokens, lengths), training=False))


@pytest.mark.slow
def test_an_exported_fine_tuned_pair_classifier_gives_transformers_the_same_logits(
        tmp_path: Path, bert_dir: Path, capsys: pytest.CaptureFixture) -> None:
    import transformers

    ft = tmp_path / "mrpc"
    assert main(["eval", str(bert_dir), "--task", "glue/mrpc", "--data", str(EVAL / "MRPC"),
                 "--quiet", "--set", "max_steps=6", "--set", "batch_size=8",
                 "--set", "learning_rate=1e-3", "--out", str(ft)]) == 0
    out = tmp_path / "mrpc-hf"
    assert main(["export", str(ft), "--format", "hf", "--out", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "not_equivalent", "1": "equivalent"}

    from lmkit.evaluation.evaluator import load_finetuned

    clf = load_finetuned(ft)
    a = ["the cat sat on the mat and the dog sat on the log", "good movies make people happy"]
    b = ["a quick brown fox jumps over the lazy dog", "bad movies make people sad"]
    ours = _lmkit_logits(clf.model, clf.tokenizer, a, b)
    theirs = _transformers_logits(out, a, b)
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
    # the trained weights were exported, not the backbone's: the head moved away from its init
    assert np.abs(ours[:, 0] - ours[:, 1]).max() > 1e-3
    # the second segment has token type 1 in transformers' tokenizer, as in lmkit's encoding
    tok = transformers.AutoTokenizer.from_pretrained(out)
    encoded = tok(a[0], b[0])
    assert encoded["input_ids"] == clf.tokenizer.encode_inputs([a[0]], [b[0]])[0].tolist()
    ids = encoded["input_ids"]
    first_sep = ids.index(tok.sep_token_id)  # [CLS] a [SEP] is segment 0, b [SEP] segment 1
    assert encoded["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)


@pytest.mark.slow
def test_an_eval_result_exports_from_python(tmp_path: Path, bert_dir: Path) -> None:
    result = lmkit.evaluate(str(bert_dir), task="glue/sst2", data=str(EVAL / "SST-2"), max_steps=3,
                            batch_size=8, max_eval_examples=16)
    out = lmkit.export(result, tmp_path / "sst2-hf")
    texts = ["a quick brown fox", "the lazy dog near the river bank is happy"]
    np.testing.assert_allclose(_transformers_logits(out, texts, None),
                               _lmkit_logits(result.model, result.tokenizer, texts, None),
                               atol=1e-4, rtol=0)
    # mean pooling has no BertForSequenceClassification equivalent: refused, saying what works
    mean = replace(result, model=SequenceClassifier(result.model.backbone, 2, pooling="mean"))
    with pytest.raises(ExportError, match="pooling='cls'"):
        lmkit.export(mean, tmp_path / "mean-hf")
    assert not (tmp_path / "mean-hf").exists()


def test_a_folder_that_is_neither_a_run_nor_a_fine_tuning_is_refused(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"steps": 3}')
    (tmp_path / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(RunError, match="does not describe a fine-tuned classifier"):
        lmkit.export(tmp_path, tmp_path.parent / f"{tmp_path.name}-hf")
