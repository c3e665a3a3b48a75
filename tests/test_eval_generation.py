"""The generation shape: source text -> target text with a decoder-only language model
(Multi30K), the loss on target tokens only, batched decoding, BLEU, chrF and ROUGE, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmkit.errors import DataError
from lmkit.evaluation.loaders import load_split
from lmkit.evaluation.shapes import Generation
from lmkit.evaluation.shapes.text_to_text import encode_targets
from lmkit.evaluation.tasks import get_task
from lmkit.registry import losses, tokenizers

MULTI30K = Path(__file__).parent / "fixtures" / "multi30k"


def lines(name: str) -> list[str]:
    return (MULTI30K / name).read_text(encoding="utf-8").splitlines()


def test_multi30k_reads_the_raw_line_aligned_files() -> None:
    task = get_task("multi30k")
    assert task.name == "multi30k/de-en" and task.eval_split == "test" and task.metrics[0] == "bleu"
    test = load_split(task, MULTI30K)  # the scored split: test_2016_flickr
    assert test.text_a == lines("test_2016_flickr.de") and test.labels.tolist() == lines("test_2016_flickr.en")
    assert test.text_b == test.labels.tolist()  # a tokenizer fitted on the examples sees the targets
    assert [len(load_split(task, MULTI30K, s)) for s in ("train", "dev")] == [48, 8]


def test_misaligned_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "val.de").write_text("Ein Hund.\nZwei Hunde.\n", encoding="utf-8")
    (tmp_path / "val.en").write_text("A dog.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"val.de has 2 lines but .*val.en has 1"):
        load_split("multi30k", tmp_path, "dev")


def test_examples_are_source_sep_target_end_labelled_with_the_target_positions() -> None:
    examples = load_split("multi30k", MULTI30K, "dev").head(3)
    tok = tokenizers.get("char").fit(examples.text_a + examples.text_b + ["\n"])
    encoded = encode_targets(examples, tok, 512)
    for i, (start, end) in enumerate(encoded.labels):
        ids = encoded.ids[i]
        assert tok.decode(ids.tolist()) == f"{examples.text_a[i]}\n{examples.text_b[i]}\n"
        # output position t predicts token t + 1: the span predicts exactly the target and its end
        assert tok.decode(ids[start + 1:end + 1].tolist()) == examples.text_b[i] + "\n"
    # too long: the target keeps its start, the source its end
    short = encode_targets(examples.head(1), tok, 24)
    text = tok.decode(short.ids[0].tolist())
    source, target = text.split("\n", 1)
    assert len(short.ids[0]) == 24 and examples.text_a[0].endswith(source) and examples.text_b[0].startswith(target)


def test_the_target_loss_is_the_mean_negative_log_likelihood_of_the_span() -> None:
    from lmkit.config import EvalConfig

    loss = losses.get("target_nll")(EvalConfig())
    log_probs = np.log(np.array([[0.5, 0.25, 0.1, 0.9], [0.2, 0.4, 0.8, 1.0]], np.float32))
    spans = np.array([[1, 3], [0, 1]], np.int32)
    # row 0: positions 1 and 2, -(ln 0.25 + ln 0.1) / 2; row 1: position 0, -ln 0.2
    expected = [-(np.log(0.25) + np.log(0.1)) / 2, -np.log(0.2)]
    assert np.asarray(loss(spans, log_probs)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow  # loads two evaluate modules (seconds each)
def test_generation_scores_are_bleu_and_rouge_of_the_texts() -> None:
    task = get_task("multi30k")
    refs = np.array(["a dog runs on the grass", "two men sit"], object)
    perfect = task.shape.score(task, "test", refs, refs)
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rouge1"] == pytest.approx(1.0)
    # "a dog" against "a dog runs on the grass": unigram precision 1, recall 2/6, F1 = 2 * (1/3) / (4/3) = 0.5
    partial = task.shape.score(task, "test", np.array(["a dog", "two men sit"], object), refs)
    assert partial["rouge1"] == pytest.approx((0.5 + 1.0) / 2)
    assert list(partial)[:4] == ["bleu", "rouge1", "rouge2", "rougeL"]


@pytest.mark.slow
def test_a_scratch_model_fine_tunes_on_multi30k_and_decodes_strings(tmp_path: Path) -> None:
    import lmkit

    result = lmkit.evaluate("scratch", task="multi30k", data=MULTI30K, arch="gpt", embed_dim=32, units=32, layers=1,
                            heads=2, max_length=160, batch_size=8, max_steps=4, learning_rate=3e-3, log_every=2,
                            max_new_tokens=24, num_beams=2)
    assert result.training["steps"] == 4 and result.training["train_examples"] == 48
    assert len(result.predictions) == 8 and all(isinstance(p, str) and "\n" not in p for p in result.predictions)
    assert 0.0 <= result.metrics["bleu"] <= 100.0
    assert all(0.0 <= result.metrics[k] <= 1.0 for k in ("rouge1", "rouge2", "rougeL"))
    assert result.confusion_matrix is None
    rows = (result.save(tmp_path) / "predictions.tsv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 9 and rows[1].split("\t")[2] == lines("test_2016_flickr.en")[0]
    assert rows[0] == "index\tsource\treference\thypothesis" and rows[1].split("\t")[1] == lines("test_2016_flickr.de")[0]
    saved = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert saved["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")


@pytest.mark.parametrize("pair", ["de-en", "en-de", "fr-en", "en-fr"])
def test_multi30k_reads_each_language_pair(pair: str) -> None:
    source, target = pair.split("-")
    examples = load_split(f"translation/multi30k/{pair}", MULTI30K, "dev")
    assert examples.text_a == lines(f"val.{source}") and examples.labels.tolist() == lines(f"val.{target}")
    assert get_task("translation/multi30k").name == "multi30k/de-en"


def test_an_unknown_language_pair_lists_the_known_ones() -> None:
    from lmkit.errors import RegistryError

    with pytest.raises(RegistryError, match=r"unknown task 'multi30k/de-fr'.*multi30k/en-de.*multi30k/en-fr"):
        get_task("multi30k/de-fr")


def test_an_empty_line_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "val.de").write_text("Ein Hund.\n\nDrei.\n", encoding="utf-8")
    (tmp_path / "val.en").write_text("A dog.\nTwo dogs.\nThree.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"val.de, line 2: empty line.*remove line 2 from both val.de and val.en"):
        load_split("multi30k", tmp_path, "dev")


def test_a_generation_task_refuses_a_metric_it_cannot_report_and_labels() -> None:
    from lmkit.errors import RegistryError
    from lmkit.evaluation.sources import ParallelText
    from lmkit.evaluation.tasks import Task

    with pytest.raises(RegistryError, match=r"cannot report accuracy; its scores are bleu, chrf, rouge1"):
        Task("t", ParallelText("de", "en"), shape=Generation(), inputs=("de",), metrics=("accuracy",),
             metric="bleu")
    with pytest.raises(RegistryError, match="has no labels"):
        Task("t", ParallelText("de", "en"), shape=Generation(), inputs=("de",), labels=("neg", "pos"))


def test_a_target_longer_than_max_length_names_the_lengths_and_the_key() -> None:
    from lmkit.evaluation.shapes.text_to_text import encode_fitting

    examples = load_split("multi30k", MULTI30K, "dev").head(3)
    tok = tokenizers.get("char").fit(examples.text_a + examples.text_b + ["\n"])
    longest = max(len(t) for t in examples.text_b)
    with pytest.raises(DataError, match=rf"has {longest} tokens\. Raise max_length to at least {longest + 3}"):
        encode_fitting(examples, tok, 24)
    assert len(encode_fitting(examples, tok, longest + 3).ids) == 3


PAIRS = [("Ein Hund läuft.", "A dog runs."), ("Zwei Männer, \"lachend\".", "Two men, \"laughing\".")]


@pytest.mark.parametrize("layout", ["lines", "tsv", "csv", "jsonl"])
@pytest.mark.parametrize("name", ["translation", "summarization"])
def test_the_generic_tasks_read_a_users_pairs_in_every_layout(tmp_path: Path, layout: str, name: str) -> None:
    import csv
    import json

    sources, targets = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    if layout == "lines":
        (tmp_path / "dev.source").write_text("\n".join(sources) + "\n", encoding="utf-8")
        (tmp_path / "dev.target").write_text("\n".join(targets) + "\n", encoding="utf-8")
    elif layout == "jsonl":
        (tmp_path / "dev.jsonl").write_text("".join(json.dumps({"source": s, "target": t}) + "\n"
                                                    for s, t in PAIRS), encoding="utf-8")
    elif layout == "tsv":  # unquoted: a quote is just a character
        (tmp_path / "dev.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in [("source", "target"), *PAIRS]),
                                          encoding="utf-8")
    else:
        with open(tmp_path / "dev.csv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([("source", "target"), *PAIRS])
    examples = load_split(name, tmp_path, "dev")
    assert examples.text_a == sources and examples.labels.tolist() == targets


def test_an_empty_target_in_a_table_names_its_row(tmp_path: Path) -> None:
    (tmp_path / "dev.csv").write_text("source,target\nEin Hund.,A dog.\nZwei.,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev.csv, row 1: empty target text"):
        load_split("translation", tmp_path, "dev")


@pytest.mark.slow
def test_a_generation_task_is_scored_while_it_fine_tunes_and_early_stopping_can_watch_bleu() -> None:
    import lmkit
    from lmkit.engine.events import EvalEvent, StartEvent

    events: list = []
    result = lmkit.evaluate("scratch", task="multi30k", data=MULTI30K, arch="gpt", embed_dim=32, units=32,
                            layers=1, heads=2, max_length=160, batch_size=8, max_steps=4, learning_rate=3e-3,
                            log_every=2, max_new_tokens=12, score_every=2, score_examples=4,
                            reporters=[events.append])
    scores = [e for e in events if isinstance(e, EvalEvent)]
    assert [e.step for e in scores] == [2, 4]
    assert all({"val_bleu", "val_chrf", "val_rouge1", "val_rougeLsum"} <= set(e.metrics) for e in scores)
    assert [(e.monitor, e.token_loss) for e in events if isinstance(e, StartEvent)] == [("val_bleu", True)]
    assert len(result.predictions) == 8  # the scored split is still scored whole at the end
    # a user's own sentences decode as the scored ones did (same model, same settings)
    sources = lines("test_2016_flickr.de")
    assert result.decode(sources) == result.predictions.tolist()
    assert len(result.decode(sources[0], num_beams=2)) == 1


def test_showcase_lists_the_best_worst_and_random_examples_by_sentence_bleu() -> None:
    import sacrebleu

    from lmkit.evaluation.result import EvalResult

    task = get_task("multi30k")
    refs = ["a dog runs on the grass", "two men sit on a bench", "a red car", "the cat sleeps"]
    hyps = ["a dog runs on the grass", "men", "a red car parks", "nothing"]
    result = EvalResult(task, "test", "m", {}, np.array(hyps, object), np.array(refs, object),
                        sources=["s0", "s1", "s2", "s3"])
    table = result.showcase(1)
    assert table.loc["best", "hypothesis"] == hyps[0] and table.loc["best", "bleu"] == pytest.approx(100.0)
    assert table.loc["worst", "bleu"] == pytest.approx(min(sacrebleu.sentence_bleu(h, [r]).score
                                                           for h, r in zip(hyps, refs)))
    assert list(table.columns) == ["bleu", "source", "reference", "hypothesis"] and len(table) == 3
