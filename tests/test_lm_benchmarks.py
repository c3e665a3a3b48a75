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
    text += "".join(load_split("wikitext-2", DATA, "test").text_a + load_split("ptb", DATA, "test").text_a)
    tokenizer = tokenizers.get("char").fit([text])
    model = architectures.get("gpt")(tokenizer.vocab_size, embed_dim=16, layers=1, heads=2, seq_len=64)
    model(np.zeros((1, 4), np.int32))
    return SimpleNamespace(model=model, tokenizer=tokenizer, dir="char-gpt")


@pytest.mark.slow  # a tiny GPT built and compiled per task: about 30 s on 2 loaded cores
@pytest.mark.parametrize("task", ["hellaswag", "piqa", "arc_easy"])
def test_zero_shot_scores_each_benchmark_with_its_chance_beside(char_gpt: SimpleNamespace, task: str) -> None:
    result = evaluate(char_gpt, task, DATA, method="zeroshot")
    assert 0.0 <= result.metrics["accuracy"] <= 1.0 and "accuracy" in result.intervals
    widths = [len(r["choices"]) for r in result.examples.records]
    assert result.baselines["chance"]["accuracy"] == pytest.approx(np.mean([1 / w for w in widths]), abs=0.2)


def test_corpora_are_read_as_documents() -> None:
    wiki = load_split("wikitext-2", DATA, "test")
    assert len(wiki) == 3 and all(d.startswith("= ") and " = \n" in d for d in wiki.text_a)
    assert wiki.text_a[0].startswith("= Robert <unk> = \n")
    ptb = load_split("ptb", DATA, "test")
    assert len(ptb) == 4 and ptb.text_a[1] == "analysts said the results were in line with <unk> expectations"


def _independent_nll(model, tokenizer, text: str, window: int) -> float:
    """Summed NLL of `text` by the model's own log-softmax, window by window."""
    import keras

    ids = np.asarray(tokenizer.encode(text), np.int32)
    total = 0.0
    for start in range(0, len(ids), window):
        piece = ids[start:start + window]
        if len(piece) < 2:
            continue
        logits = np.asarray(model(piece[None, :-1], training=False), np.float64)[0]
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        total -= float(logp[np.arange(len(piece) - 1), piece[1:]].sum())
    del keras
    return total


@pytest.mark.slow  # the model's own log-softmax, eagerly per window, and a 200-resample bootstrap: about 60 s
@pytest.mark.parametrize("task", ["wikitext-2", "ptb"])
def test_perplexity_per_word_and_byte_as_the_harness_defines_them(char_gpt: SimpleNamespace, task: str) -> None:
    result = evaluate(char_gpt, task, DATA, method="zeroshot")
    docs = result.examples.text_a
    nll = sum(_independent_nll(char_gpt.model, char_gpt.tokenizer, d, 64) for d in docs)
    words, size = sum(len(d.split()) for d in docs), sum(len(d.encode("utf-8")) for d in docs)
    assert result.metrics["word_perplexity"] == pytest.approx(np.exp(nll / words), rel=1e-4)
    assert result.metrics["byte_perplexity"] == pytest.approx(np.exp(nll / size), rel=1e-4)
    assert result.metrics["bits_per_byte"] == pytest.approx(nll / size / np.log(2), rel=1e-4)
    interval = result.intervals["word_perplexity"]
    assert interval.low <= result.metrics["word_perplexity"] <= interval.high  # documents resampled
    assert result.baselines == {}


@pytest.mark.slow  # reads the data and fits the scratch tokenizer before the head refuses: about 15 s
@pytest.mark.filterwarnings("ignore:4 of the 4 scored examples")  # scored on its training split: no matter here
def test_a_perplexity_task_has_nothing_to_fine_tune() -> None:
    from lmkit.errors import ConfigError

    with pytest.raises(ConfigError, match="no head to fine-tune; use method='zeroshot'"):
        evaluate("scratch", "ptb", DATA, max_steps=1, split="test", train_split="test")


@pytest.mark.slow  # a paired bootstrap through the perplexity module, 200 resamples each: about 30 s
def test_the_leaderboard_takes_the_lowest_perplexity_as_best() -> None:
    from lmkit.evaluation.leaderboard import Leaderboard
    from lmkit.evaluation.result import EvalResult

    task = get_task("ptb")
    docs = load_split("ptb", DATA, "test")
    good = EvalResult.build(task, "test", "good", np.array([[20.0, 60], [25, 60], [22, 70], [30, 75]]), docs.labels, docs)
    bad = EvalResult.build(task, "test", "bad", np.array([[90.0, 60], [95, 60], [99, 70], [96, 75]]), docs.labels, docs)
    board = Leaderboard([bad, good])
    assert board.versus_best("good", "ptb") is None and board.versus_best("bad", "ptb").significant


def test_lambada_passages_are_cut_at_their_final_space(tmp_path: Path) -> None:
    passages = load_split("lambada", DATA, "test")
    assert passages.labels.tolist() == ["net", "pianist", "train", "key", "cake"]
    assert passages.text_a[3] == ("\u201cdon't forget the key,\u201d said anna as she closed the door. but when they "
                                  "came home that night and searched every pocket, nobody could find the")
    (tmp_path / "lambada_test.jsonl").write_text('{"text": "one"}\n')
    with pytest.raises(DataError, match=r"lambada_test.jsonl, line 1: a lambada record is .*got \"\{'text': 'one'\}"):
        load_split("lambada", tmp_path, "test")


def _greedy_passages(folder: Path, into: Path) -> None:
    """The fixture's passages, and for each a twin whose last word is the tiny GPT-2's own greedy
    next token (by `transformers`), so that the accuracy counts some passages right, and one whose
    last word only starts with it (greedy decoding writes its first token, not all)."""
    import json

    import torch
    import transformers
    from tokenizers import Tokenizer

    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    texts = [json.loads(line)["text"] for line in (DATA / "lambada" / "lambada_test.jsonl").read_text().splitlines()]
    for text in list(texts):
        context = text.rsplit(" ", 1)[0]
        with torch.no_grad():
            ids = tok.encode(context).ids[-64:]
            word = tok.decode([int(model(torch.tensor([ids])).logits[0, -1].argmax())])
        if word.startswith(" ") and word[1:].isalpha():  # and a longer word that starts alike
            texts += [context + word, context + word + "zq"]
    into.mkdir()
    (into / "lambada_test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def _harness_lambada(folder: Path, data: Path) -> tuple[list[float], list[bool]]:
    """Each passage's last-word log-likelihood and is_greedy as lm-evaluation-harness's
    ``lambada_openai`` computes them on a `transformers` model (its HFLM: the pair encoded whole,
    the continuation the tokens after the context's, the last ``max_length + 1`` tokens read)."""
    import json

    import torch
    import transformers
    from tokenizers import Tokenizer

    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ll, greedy = [], []
    for line in (data / "lambada_test.jsonl").read_text().splitlines():
        text = json.loads(line)["text"]
        context, target = " ".join(text.split(" ")[:-1]), " " + text.split(" ")[-1]   # its doc_to_text / _target
        whole, ctx = tok.encode(context + target).ids, tok.encode(context).ids
        cont = whole[len(ctx):]
        inputs = (ctx + cont)[-(model.config.n_positions + 1):][:-1]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([inputs])).logits[0, -len(cont):].double(), -1)
        ll.append(float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum()))
        greedy.append(logp.argmax(-1).tolist() == cont)
    return ll, greedy


@pytest.mark.slow  # a tiny GPT-2 made by transformers, scored by lmkit and by torch: about 40 s on 2 loaded cores
def test_lambada_scores_equal_the_harness_definition_on_a_transformers_gpt2(tmp_path: Path) -> None:
    from hf_checkpoints import gpt2_folder
    from statsmodels.stats.proportion import proportion_confint

    folder = gpt2_folder(tmp_path / "gpt2")
    _greedy_passages(folder, tmp_path / "lambada")
    ll, greedy = _harness_lambada(folder, tmp_path / "lambada")
    assert 0 < sum(greedy) < len(greedy)  # both kinds of passage are scored
    result = evaluate(str(folder), "lambada", tmp_path, method="zeroshot")
    assert result.predictions[:, 1].tolist() == [float(g) for g in greedy]
    assert result.predictions[:, 0] == pytest.approx(ll, rel=1e-4)
    assert result.metrics["accuracy"] == pytest.approx(np.mean(greedy))
    assert result.metrics["perplexity"] == pytest.approx(np.exp(-np.mean(ll)), rel=1e-4)
    low, high = proportion_confint(sum(greedy), len(greedy), alpha=0.05, method="wilson")
    assert result.intervals["accuracy"][:2] == pytest.approx((low, high))  # a proportion: Wilson's interval
    assert "perplexity" in result.intervals and result.baselines == {}
