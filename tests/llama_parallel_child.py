"""Model parallel `llama` training, run as its own process (the device count is fixed when JAX
starts, so tests/test_llama.py starts it):

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/llama_parallel_child.py CORPUS OUT

Trains a tiny `llama` (4 query heads, 2 key/value heads) on one device and split over a model
axis of 2, and prints the losses' largest difference and where the split weights live as JSON.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

import lmkit  # noqa: E402
from lmkit.distribute import layout_for, state_shardings  # noqa: E402


def main(corpus: str, out: str) -> None:
    options = dict(arch="llama", data=corpus, embed_dim=16, layers=2, heads=4, seq_len=16,
                   batch_size=4, max_steps=6, steps_per_dispatch=1, eval_every=6,
                   eval_batches=1, warmup_steps=0, learning_rate=1e-2, sample_tokens=0, seed=0,
                   tokenizer="char", model={"kv_heads": 2}, reporters=[])
    one = lmkit.train(**options, devices=1, out=f"{out}/one")
    split = lmkit.train(**options, devices=2, model_parallel=2, out=f"{out}/split")
    losses = [np.array([r["loss"] for r in run.history if "loss" in r]) for run in (one, split)]
    # where the step placed each weight: the rules `state_shardings` applies to this model
    shardings = state_shardings(layout_for(2, 4, 2), split.model)[0]
    specs = {var.path.rsplit("/", 1)[-1]: str(sharding.spec)
             for var, sharding in zip(split.model.trainable_variables, shardings)
             if "/block_0/" in var.path}
    print(json.dumps({"mesh": split.summary.get("mesh"), "w_q": specs["w_q"],
                      "w_down": specs["w_down"],
                      "trained": bool(losses[1][-1] < losses[1][0]),
                      "loss_diff": float(np.abs(losses[0] - losses[1]).max())}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
