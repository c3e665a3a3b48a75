"""WiC and WSC spans: character offsets and word indices become the right token positions, and
the span head pools exactly those positions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmkit.evaluation.encoding import encode_spans
from lmkit.evaluation.loaders import load_split
from lmkit.registry import tokenizers

SUPERGLUE = Path(__file__).parent / "fixtures" / "superglue"


def _marked(task: str) -> tuple[object, list[list[str]]]:
    """The val examples of `task` and, per example, the text of each marked span, read from the
    official fields of the file (WiC: the start/end offsets; WSC: the words at the word indices)."""
    examples = load_split(task, SUPERGLUE, "val")
    folder = "WiC" if task.endswith("wic") else "WSC"
    lines = [json.loads(x) for x in (SUPERGLUE / folder / "val.jsonl").read_text().splitlines()]
    if folder == "WiC":
        return examples, [[r["sentence1"][r["start1"]:r["end1"]], r["sentence2"][r["start2"]:r["end2"]]]
                          for r in lines]
    words = [r["text"].split(" ") for r in lines]
    return examples, [[" ".join(w[r["target"][f"span{n}_index"]:][:len(r["target"][f"span{n}_text"].split())])
                       for n in (1, 2)] for w, r in zip(words, lines)]


@pytest.mark.parametrize("task", ["superglue/wic", "superglue/wsc"])
@pytest.mark.parametrize("kind", ["char", "byte", "word"])
def test_pooled_positions_are_the_tokens_of_the_marked_words(task: str, kind: str) -> None:
    examples, spans = _marked(task)
    tok = tokenizers.get(kind).fit([" ".join(examples.text_a + (examples.text_b or []))])
    encoded = encode_spans(examples, tok, 4000)
    assert encoded.spans.shape == (len(examples), 2, 2)
    for i, texts in enumerate(spans):
        got = [tok.decode(encoded.ids[i][a:b].tolist()) for a, b in encoded.spans[i]]
        assert [g.replace(" ", "") for g in got] == [t.replace(" ", "") for t in texts]  # word: joined by spaces
        if kind != "word":  # piecewise encoding gives the ids the whole text has
            whole = tok.encode(examples.text_a[i]) + (tok.encode("\n") + tok.encode(examples.text_b[i])
                                                      if examples.text_b else [])
            assert encoded.ids[i].tolist() == list(whole)


def test_wsc_word_indices_become_character_offsets_of_the_span_words() -> None:
    wsc = load_split("superglue/wsc", SUPERGLUE, "val")
    first = wsc.records[0]  # span1 "anyone" is word 32, span2 "him" word 47 of text.split(" ")
    (_, a, b), (_, c, d) = first["spans"]
    assert first["text"][a:b] == "anyone" and first["text"][c:d] == "him"
    assert first["text"].split(" ").index("anyone") == 32 and len(first["text"][:a].split(" ")) - 1 == 32
    assert wsc.records[1]["text"][slice(*wsc.records[1]["spans"][0][1:])] == "Mr. Moncrieff"  # two words
    assert wsc.text_a[0] == first["text"]  # no markers in the text: the head reads the positions


def test_a_span_that_truncation_cut_off_is_empty_and_in_bounds() -> None:
    wic = load_split("superglue/wic", SUPERGLUE, "val")
    tok = tokenizers.get("char").fit([" ".join(wic.text_a + wic.text_b)])
    encoded = encode_spans(wic, tok, 70)
    first = wic.records[0]  # sentence2 (91 chars) gives up its tail first; sentence1 (31) is whole
    assert all(len(ids) <= 70 for ids in encoded.ids)
    s1, s2 = encoded.spans[0]
    assert tok.decode(encoded.ids[0][s1[0]:s1[1]].tolist()) == "class"
    assert s2[0] == s2[1] <= 70  # sentence2's "class" (characters 85..90) was trimmed away
    assert first["spans"][1] == (1, 85, 90)


def test_a_checkpoint_tokenizer_maps_spans_past_its_special_tokens() -> None:
    from hf_checkpoints import wordpiece_tokenizer

    from lmkit.tokenizers import PretrainedTokenizer

    tokenizer = PretrainedTokenizer(wordpiece_tokenizer()._tokenizer)
    for task in ("superglue/wic", "superglue/wsc"):
        examples, spans = _marked(task)
        encoded = encode_spans(examples, tokenizer, 512)
        for i, texts in enumerate(spans):
            assert encoded.ids[i][0] == tokenizer.token_id("[CLS]")
            got = [encoded.ids[i][a:b].tolist() for a, b in encoded.spans[i]]
            assert got == [list(tokenizer.encode(t)) for t in texts]


@pytest.mark.slow
def test_the_span_head_reads_the_mean_state_of_each_span() -> None:
    import keras

    from lmkit.evaluation.heads import SpanClassifier

    class Lookup(keras.Model):  # hidden state of a token = its embedding: no context
        def __init__(self) -> None:
            super().__init__()
            self.embed = keras.layers.Embedding(10, 3)

        def features(self, tokens, training=False):
            return self.embed(tokens)

    keras.utils.set_random_seed(0)
    backbone = Lookup()
    model = SpanClassifier(backbone, 2, spans=2, pooling="last", dropout=0.0)
    tokens = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 1, 0, 0]], np.int32)
    lengths = np.array([6, 4], np.int32)
    spans = np.array([[[1, 3], [4, 5]], [[0, 1], [2, 4]]], np.int32)
    logits = np.asarray(model((tokens, lengths, spans)))
    table = np.asarray(backbone.embed.embeddings)
    kernel, bias = (np.asarray(w) for w in model.head.weights)
    for b in range(2):
        states = table[tokens[b]]
        features = np.concatenate([states[lengths[b] - 1], *(states[s:e].mean(0) for s, e in spans[b])])
        assert logits[b] == pytest.approx(features @ kernel + bias, abs=1e-5)
