"""Zero-shot likelihood scoring: the scores are the model's own log-probabilities."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lmkit.errors import ConfigError, DataError
from lmkit.evaluation.loaders import load_split
from lmkit.evaluation.zeroshot import choice_pairs, few_shot_prefix, loglikelihoods
from lmkit.registry import architectures, tokenizers

SUPERGLUE = Path(__file__).parent / "fixtures" / "superglue"


@pytest.fixture(scope="module")
def char_gpt() -> SimpleNamespace:
    """A tiny char-level GPT with a 12-token context (random weights: the sums must match anyway)."""
    import keras

    keras.utils.set_random_seed(0)
    copa = load_split("superglue/copa", SUPERGLUE, "val")
    text = "".join(c for pairs in choice_pairs(copa) for pair in pairs for c in pair)
    tokenizer = tokenizers.get("char").fit([text])
    model = architectures.get("gpt")(tokenizer.vocab_size, embed_dim=16, layers=1, heads=2, seq_len=12)
    model(np.zeros((1, 4), np.int32))
    return SimpleNamespace(model=model, tokenizer=tokenizer, dir="char-gpt")


def _independent(model, tokenizer, context: str, continuation: str, window: int) -> float:
    """Run the model on the joined tokens (the last window + 1) and sum log-softmax over the continuation."""
    ctx, cont = tokenizer.encode(context), tokenizer.encode(continuation)
    ids = np.asarray(ctx + cont, np.int32)[-(window + 1):]
    logits = np.asarray(model(ids[None, :-1], training=False), np.float64)[0]
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    n = min(len(cont), len(ids) - 1)
    positions = np.arange(len(ids) - 1 - n, len(ids) - 1)
    return float(sum(log_probs[p, ids[p + 1]] for p in positions))


@pytest.mark.slow  # compiles the model's forward pass for several shapes
def test_scores_equal_the_models_log_softmax_at_the_continuation(char_gpt) -> None:
    model, tok = char_gpt.model, char_gpt.tokenizer
    pairs = [("The sun", " rose."), ("a", " b"), ("My body cast a shadow over the grass so", " the sun was rising."),
             ("x" * 40, " grass"), ("ab", "c" * 20)]  # long contexts (cut from the left), a too-long continuation
    ll, n = loglikelihoods(model, tok, pairs, window=12, batch_size=2)
    expected = [_independent(model, tok, c, x, 12) for c, x in pairs]
    np.testing.assert_allclose(ll, expected, rtol=1e-4, atol=1e-4)
    assert n.tolist() == [6, 2, 12, 6, 12]
    # a context longer than the window is cut from the left: only its last tokens matter
    far = loglikelihoods(model, tok, [("zzzz" + "x" * 40, " grass")], window=12)[0]
    np.testing.assert_allclose(far, ll[3:4], rtol=1e-6)


@pytest.mark.slow  # compiles the model's forward pass for several shapes
def test_evaluate_zeroshot_predicts_the_argmax_and_scores_with_the_task_metric(char_gpt) -> None:
    import lmkit

    result = lmkit.evaluate(char_gpt, task="superglue/copa", data=SUPERGLUE, method="zeroshot")
    copa = load_split("superglue/copa", SUPERGLUE, "val")
    pairs = choice_pairs(copa)
    assert pairs[0][0][0].endswith(" so") or pairs[0][0][0].endswith(" because")
    ll, _ = loglikelihoods(char_gpt.model, char_gpt.tokenizer, [p for ps in pairs for p in ps], window=12)
    expected = ll.reshape(-1, 2).argmax(1)
    assert result.predictions.tolist() == expected.tolist()
    assert result.metrics == {"accuracy": pytest.approx(np.mean(expected == copa.labels))}
    assert result.training["method"] == "zeroshot" and result.training["window"] == 12
    normalized = lmkit.evaluate(char_gpt, task="superglue/copa", data=SUPERGLUE, method="zeroshot",
                                length_normalize=True)
    lengths = np.asarray([len(c) for ps in pairs for _, c in ps], float)
    assert normalized.predictions.tolist() == (ll / lengths).reshape(-1, 2).argmax(1).tolist()


@pytest.mark.slow  # compiles the model's forward pass for several shapes
def test_record_multirc_and_glue_prompts_score_through_their_metrics(char_gpt) -> None:
    import lmkit

    record = lmkit.evaluate(char_gpt, task="superglue/record", data=SUPERGLUE, method="zeroshot")
    assert set(record.metrics) == {"f1", "exact_match", "combined_score"} and record.confusion_matrix is None
    multirc = lmkit.evaluate(char_gpt, task="superglue/multirc", data=SUPERGLUE, method="zeroshot")
    assert set(multirc.metrics) == {"exact_match", "f1_a", "combined_score"}
    sst2 = lmkit.evaluate(char_gpt, task="glue/sst2", data=Path(__file__).parent / "fixtures" / "eval" / "glue",
                          method="zeroshot", max_eval_examples=4)
    assert len(sst2.predictions) == 4


def test_zeroshot_refuses_what_it_cannot_score() -> None:
    import lmkit

    # each refusal comes before the model is run, so a tokenizer alone stands in for the run
    char_gpt = SimpleNamespace(model=None, tokenizer=tokenizers.get("char").fit(["abc so"]), dir="run")

    with pytest.raises(ConfigError, match="'scratch' has none"):
        lmkit.evaluate("scratch", task="superglue/copa", data=SUPERGLUE, method="zeroshot")
    with pytest.raises(ConfigError, match=r"glue/cola has no zero-shot prompts .* works for: .*superglue/copa"):
        lmkit.evaluate(char_gpt, task="glue/cola", data=Path(__file__).parent / "fixtures" / "eval" / "glue",
                       method="zeroshot")
    with pytest.raises(DataError, match="non-empty context"):
        loglikelihoods(char_gpt.model, char_gpt.tokenizer, [("", " a")])


@pytest.mark.slow
def test_a_model_trained_on_the_right_choices_wins_every_time(tmp_path: Path) -> None:
    """COPA items whose right choice is the text the model was trained on: accuracy 1.0."""
    import lmkit

    facts = [("The rain fell.", "The grass got wet."), ("The sun set.", "The sky went dark."),
             ("The bell rang.", "The class began.")]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{p[:-1]} so {c[0].lower() + c[1:]}\n" for p, c in facts) * 150)
    run = lmkit.train(arch="gpt", data=str(corpus), tokenizer="char", embed_dim=32, units=64, layers=1,
                      heads=2, seq_len=48, batch_size=16, max_steps=150, learning_rate=3e-3, eval_every=150,
                      eval_batches=1, sample_tokens=0, out=str(tmp_path / "run"), reporters=[])
    lines = []
    for i, (premise, right) in enumerate(facts * 2):
        wrong = " ".join(w[::-1] for w in right.split())  # the same characters, never seen in this order
        choices = (right, wrong) if i % 2 == 0 else (wrong, right)
        lines.append(json.dumps({"premise": premise, "choice1": choices[0], "choice2": choices[1],
                                 "question": "effect", "label": i % 2, "idx": i}))
    (tmp_path / "COPA").mkdir()
    (tmp_path / "COPA" / "val.jsonl").write_text("\n".join(lines) + "\n")
    result = lmkit.evaluate(str(tmp_path / "run"), task="superglue/copa", data=tmp_path, method="zeroshot")
    assert result.metrics["accuracy"] == 1.0
    assert result.predictions.tolist() == [0, 1] * 3


def test_few_shot_prefix_is_solved_training_examples_before_every_context() -> None:
    train = load_split("superglue/copa", SUPERGLUE, "train")
    prefix = few_shot_prefix(train, 2, seed=3)
    blocks = prefix.split("\n\n")
    assert len(blocks) == 3 and blocks[-1] == ""
    for block in blocks[:2]:
        i = next(i for i in range(len(train)) if block.startswith(train.records[i]["premise"].rstrip(".")))
        right = train.records[i]["choices"][train.labels[i]]
        assert block.endswith(right[:1].lower() + right[1:])
    assert few_shot_prefix(train, 2, seed=3) == prefix  # seeded
    val = load_split("superglue/copa", SUPERGLUE, "val")
    assert all(c.startswith(prefix) for pairs in choice_pairs(val, prefix) for c, _ in pairs)
    with pytest.raises(DataError, match="shots=9 needs that many labelled examples .* it has 8"):
        few_shot_prefix(train, 9)


@pytest.mark.slow
def test_few_shot_scores_the_prefixed_pairs(char_gpt) -> None:
    import lmkit

    result = lmkit.evaluate(char_gpt, task="superglue/copa", data=SUPERGLUE, method="zeroshot", shots=1, seed=2)
    prefix = few_shot_prefix(load_split("superglue/copa", SUPERGLUE, "train"), 1, seed=2)
    pairs = choice_pairs(load_split("superglue/copa", SUPERGLUE, "val"), prefix)
    ll, _ = loglikelihoods(char_gpt.model, char_gpt.tokenizer, [p for ps in pairs for p in ps], window=12)
    assert result.training["shots"] == 1
    assert result.predictions.tolist() == ll.reshape(-1, 2).argmax(1).tolist()
