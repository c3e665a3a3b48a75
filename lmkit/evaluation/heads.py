"""A classification (or regression) head on a language model's hidden states.

`SequenceClassifier(backbone, num_outputs, pooling)` maps ``(tokens (B, T), lengths (B,))`` to
logits ``(B, num_outputs)``: the backbone's hidden states ``(B, T, H)`` are pooled -- the state
at the last real token (`last`), the mean over real tokens (`mean`), both side by side
(`concat`, as in ULMFiT), or the first token's state (`cls`, BERT's ``[CLS]``) -- and go through
dropout and one dense layer. `SpanClassifier` also pools the states over marked spans (WiC's
target word in each sentence, WSC's noun phrase and pronoun), given as token positions.
`MultipleChoiceClassifier` reads one logit per choice sequence (COPA, ReCoRD), and
`NextTokenLogProbs` reads the language model itself: the log-probability of each next token
(the generation shape's training output). `SequenceClassifier` and `NextTokenLogProbs` also
take `lmkit.data.packing.Packed` inputs (several examples per row) and give the same per-example
outputs.

>>> clf = SequenceClassifier(run.model, num_outputs=2, pooling="concat")   # doctest: +SKIP
>>> clf((tokens, lengths)).shape                                           # doctest: +SKIP
(32, 2)
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
from keras import ops

from lmkit.data.packing import Packed
from lmkit.errors import ConfigError
from lmkit.forward import pool
from lmkit.models.base import STATES_AT, Dropout
from lmkit.registry import architectures

__all__ = ["SequenceClassifier", "SpanClassifier", "MultipleChoiceClassifier", "NextTokenLogProbs",
           "hidden_states", "PADDED_CHOICE"]

POOLINGS = ("last", "mean", "concat", "cls")
#: the logit of a padding row (an example with fewer candidates than the head's width)
PADDED_CHOICE = -1e9


def hidden_states(model: Any, tokens: Any, training: bool = False, segments: Any = None,
                  at: Any = None) -> Any:
    """Hidden states ``(B, T, H)`` of a language model: the features its output head reads
    (with `at`, flat positions ``(N,)``, those positions' ``(N, H)``: `STATES_AT`).

    Every `lmkit.models.base.LanguageModel` provides them through ``features``; an architecture
    that does not cannot serve as a backbone. A model that was never called has no weights yet
    (``features`` reads them directly), so it is called once first, as Keras's first call would.
    """
    features = getattr(model, "features", None)
    options = {} if segments is None else {"segments": segments}  # `lmkit.data.packing`
    if at is not None:
        options["at"] = at
    if callable(features):
        try:
            if not getattr(model, "built", True):
                model(tokens)  # creates the weights
            return features(tokens, training=training, **options)
        except NotImplementedError:  # `LanguageModel.features` not overridden
            pass
    raise ConfigError(
        f"architecture {type(model).__name__} does not expose its hidden states "
        f"(`features(tokens, training)`), so it cannot be fine-tuned on a task")


class SequenceClassifier(keras.Model):
    """Backbone hidden states -> pooled vector -> dropout -> dense logits ``(B, num_outputs)``."""

    #: whether `call` also takes `Packed` inputs (fine-tuning then packs its batches)
    takes_packed: ClassVar[bool] = True

    def __init__(self, backbone: keras.Model, num_outputs: int, pooling: str = "concat",
                 dropout: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.num_outputs = num_outputs
        self.drop = Dropout(dropout)
        self.head = keras.layers.Dense(num_outputs, name="classifier")
        #: the first token's state read from a backbone that computes its last layer for those
        #: positions alone (`STATES_AT`): the same logits, a step 1.12x faster on MiniLM
        #: (`lmkit bench states_at`)
        entry = architectures.entry_of(backbone)
        self.first_only = pooling == "cls" and entry is not None and entry.has(STATES_AT)

    def call(self, inputs: tuple[Any, Any] | Packed, training: bool = False) -> Any:
        if isinstance(inputs, Packed):  # several examples per row: pooled per example
            tokens, lengths, segments, offsets = inputs
        else:
            (tokens, lengths), segments, offsets = inputs, None, None
        if self.first_only:
            if offsets is None:  # row i holds example i from its start
                offsets = ops.arange(ops.shape(tokens)[0], dtype="int32") * ops.shape(tokens)[1]
            pooled = self.states(tokens, training, segments, at=offsets)
        else:
            pooled = self.pool(self.states(tokens, training, segments), lengths, offsets)
        return self.head(self.drop(pooled, training=training))

    def states(self, tokens: Any, training: bool, segments: Any = None, at: Any = None) -> Any:
        """The backbone's hidden states ``(B, T, H)`` in float32 (``(N, H)`` at flat positions
        `at`)."""
        return ops.cast(hidden_states(self.backbone, tokens, training, segments, at), "float32")

    def pool(self, h: Any, lengths: Any, offsets: Any = None) -> Any:
        """One vector per sequence ``(B, H)`` (``(B, 2H)`` for `concat`) by `pooling`
        (`lmkit.forward.pool`; `offsets`: where each example starts in packed rows)."""
        return pool(h, lengths, self.pooling, offsets)


class SpanClassifier(SequenceClassifier):
    """A `SequenceClassifier` that also reads marked spans: inputs ``(tokens (B, T), lengths
    (B,), spans (B, S, 2))``, each span the token positions ``[start, end)`` of one marked
    phrase. The head reads the sequence's pooled vector and each span's mean state, side by
    side: ``(B, P + S * H)``.

    >>> clf = SpanClassifier(run.model, num_outputs=2, spans=2)   # doctest: +SKIP
    >>> clf((tokens, lengths, spans)).shape                       # doctest: +SKIP
    (32, 2)
    """

    takes_packed: ClassVar[bool] = False  # span positions are per padded row

    def __init__(self, backbone: keras.Model, num_outputs: int, spans: int, pooling: str = "concat",
                 dropout: float = 0.1, **kwargs: Any) -> None:
        super().__init__(backbone, num_outputs, pooling, dropout, **kwargs)
        self.spans = spans
    def call(self, inputs: tuple[Any, Any, Any], training: bool = False) -> Any:
        tokens, lengths, spans = inputs
        h = self.states(tokens, training)                                               # (B, T, H)
        spans = ops.cast(spans, "int32")
        positions = ops.arange(ops.shape(h)[1], dtype="int32")[None, None, :]
        inside = ops.cast((positions >= spans[:, :, :1]) & (positions < spans[:, :, 1:]), h.dtype)  # (B, S, T)
        means = ops.einsum("bst,bth->bsh", inside, h) / ops.maximum(ops.sum(inside, -1), 1.0)[:, :, None]
        flat = ops.reshape(means, (-1, self.spans * ops.shape(h)[2]))                   # (B, S * H)
        pooled = ops.concatenate([self.pool(h, lengths), flat], axis=-1)
        return self.head(self.drop(pooled, training=training))


class MultipleChoiceClassifier(SequenceClassifier):
    """A `SequenceClassifier` with one logit per sequence, read as ``(B, choices)`` logits;
    rows of length 0 are padding (fewer candidates than `choices`) and get `PADDED_CHOICE`."""

    takes_packed: ClassVar[bool] = False  # an example's choices are consecutive rows

    def __init__(self, backbone: keras.Model, choices: int, pooling: str = "concat", dropout: float = 0.1,
                 **kwargs: Any) -> None:
        super().__init__(backbone, 1, pooling, dropout, **kwargs)
        self.choices = choices
    def call(self, inputs: Any, training: bool = False) -> Any:
        # inputs hold B * choices sequences, an example's choices next to each other
        logits = ops.reshape(super().call(inputs, training=training), (-1, self.choices))
        real = ops.reshape(ops.cast(inputs[1], "int32") > 0, (-1, self.choices))
        return ops.where(real, logits, ops.cast(PADDED_CHOICE, logits.dtype))


class NextTokenLogProbs(keras.Model):
    """A language model read as ``(tokens (B, T), lengths (B,)) -> (B, T)`` log-probabilities:
    position t holds log p(tokens[t + 1] | tokens[:t + 1]) (the last position reads padding).
    It adds no weights: fine-tuning trains the language model itself, which then decodes."""

    takes_packed: ClassVar[bool] = True

    def __init__(self, backbone: keras.Model, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, inputs: tuple[Any, Any] | Packed, training: bool = False) -> Any:
        tokens = ops.cast(inputs[0], "int32")
        packed = {"segments": inputs.segments} if isinstance(inputs, Packed) else {}
        logits = ops.cast(self.backbone(tokens, training=training, **packed), "float32")  # (B, T, V)
        log_probs = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
        following = ops.concatenate([tokens[:, 1:], ops.zeros_like(tokens[:, :1])], axis=1)
        picked = ops.take_along_axis(log_probs, following[:, :, None], axis=-1)[:, :, 0]  # (B, T)
        if not packed:
            return picked
        # each example's positions from its start (its labels' frame): (N, W). Its last position
        # reads the next example's first token, a position no target span includes
        width = ops.shape(tokens)[1]
        at = ops.cast(inputs.offsets, "int32")[:, None] + ops.arange(width, dtype="int32")[None, :]
        return ops.take(ops.reshape(picked, (-1,)), ops.minimum(at, ops.size(picked) - 1), axis=0)
