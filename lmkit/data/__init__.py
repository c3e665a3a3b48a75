"""The data layer: text corpora (`corpus`) and memory-mapped token ids and batches (`tokens`)."""

from lmkit.data.corpus import Corpus, open_corpus
from lmkit.data.tokens import (WindowSampler, sequential_batches, split, steps_for_epochs,
                               token_ids, tokens_per_epoch)

__all__ = ["Corpus", "open_corpus", "token_ids", "split", "WindowSampler", "sequential_batches",
           "tokens_per_epoch", "steps_for_epochs"]
