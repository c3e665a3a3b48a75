"""Pretrained checkpoints: Hugging Face folders (BERT-family encoders, GPT-2, Llama, Mistral,
Qwen2) read offline.

`from_pretrained` reads the folder (`folder.py`: config, safetensors, tokenizer) and returns a
`Pretrained` (`loader.py`) holding an lmkit model of a registered architecture.

>>> mini = from_pretrained("minilm-l6")                  # doctest: +SKIP
"""

from lmkit.pretrained.folder import is_checkpoint
from lmkit.pretrained.loader import Pretrained, checkpoint_folder, from_pretrained

__all__ = ["Pretrained", "from_pretrained", "checkpoint_folder", "is_checkpoint"]
