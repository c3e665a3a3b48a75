"""The data layer: text corpora (`corpus`) and memory-mapped token ids and batches (`tokens`)."""

from lmkit.data.corpus import Corpus, open_corpus
from lmkit.data.tokens import WindowSampler, sequential_batches, split, token_ids

__all__ = ["Corpus", "open_corpus", "token_ids", "split", "WindowSampler", "sequential_batches"]
