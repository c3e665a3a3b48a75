"""lmkit's built-in language-model architectures, registered in `lmkit.registry.architectures`.

The registry imports this package on its first lookup; importing it imports Keras. Every model
subclasses `lmkit.models.base.LanguageModel` (see that module for the contract).

>>> from lmkit.registry import architectures
>>> model = architectures.get("gpt")(vocab_size=65, layers=2, seq_len=32)   # doctest: +SKIP
"""

# (lmkit/__init__.py makes JAX the default Keras backend before anything imports keras.)
from lmkit.models import bert, elman, gated_cnn, gpt, gpt2, llama, recurrent  # registers the built-ins
from lmkit.models.base import LanguageModel

__all__ = ["LanguageModel", "bert", "gated_cnn", "gpt", "gpt2", "llama", "recurrent", "elman"]
