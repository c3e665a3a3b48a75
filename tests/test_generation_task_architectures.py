"""Every decoder architecture lmkit builds (the seed's LSTM included) learns a generation task:
trained on ``source <sep> target <end>`` with the loss on the target, then decoded and scored."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lmkit.registry import architectures

MULTI30K = Path(__file__).parent / "fixtures" / "multi30k"
DECODERS = [e.name for e in architectures.list() if not e.has("encoder")]


def test_the_decoders_include_the_seeds_lstm_and_gpt() -> None:
    assert {"classic_lstm", "lstm", "gpt", "gated_cnn"} <= set(DECODERS)


@pytest.mark.slow
@pytest.mark.parametrize("arch", DECODERS)
def test_every_decoder_architecture_fits_a_translation_batch_and_decodes(arch: str) -> None:
    import lmkit
    from lmkit.engine.events import StepEvent

    events: list = []
    # one batch of the same 8 pairs every step: its target loss must fall
    result = lmkit.evaluate("scratch", task="multi30k", data=MULTI30K, arch=arch, tokenizer="char", embed_dim=32,
                            units=32, layers=1, heads=2, max_length=160, batch_size=8, max_train_examples=8,
                            max_steps=12, learning_rate=1e-2, warmup_steps=0, log_every=1, max_eval_examples=2,
                            max_new_tokens=4, reporters=[events.append])
    losses = [e.loss for e in events if isinstance(e, StepEvent)]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses), (arch, losses)
    assert losses[-1] < 0.9 * losses[0], (arch, losses)
    assert len(result.predictions) == 2 and all(isinstance(p, str) for p in result.predictions)
    assert 0.0 <= result.metrics["bleu"] <= 100.0
