"""Whether two checkouts compile the same training step: a hash of its program, not a timing.

    git archive 8302142 | tar -x -C /tmp/lmkit-ref                        # the reference
    PYTHONPATH=/tmp/lmkit-ref python benchmarks/same_step.py              # its step
    PYTHONPATH=.              python benchmarks/same_step.py              # this checkout's

Builds the ``nanogpt_char`` preset's model, optimizer and one-device compiled step (10 fused
steps) with whichever lmkit ``PYTHONPATH`` names, lowers it and prints a hash of its StableHLO
text. The same hash means the same program runs on the device, so a difference in speed
between the checkouts can only come from the Python around it: a way to check an overhead
claim that timings on a loaded machine cannot settle (docs/performance.md).
"""

from __future__ import annotations

import hashlib
import os
import re

os.environ.setdefault("KERAS_BACKEND", "jax")


def main() -> None:
    import keras
    import numpy as np

    import lmkit
    from lmkit.build import build_model
    from lmkit.config import TrainConfig, presets
    from lmkit.resolve import resolve
    from lmkit.training.step import make_stepper

    cfg = TrainConfig.from_sources(presets()["nanogpt_char"])
    parts = resolve(cfg)
    keras.utils.set_random_seed(0)
    model = build_model(cfg, 65, parts.arch.obj)
    optimizer = parts.optimizer.obj(cfg, parts.schedule.obj(cfg, 200))
    stepper = make_stepper(model, optimizer, parts.loss.obj(cfg), ["loss"], 5, 1)
    xs = np.zeros((10, cfg.batch_size, cfg.seq_len), np.int32)
    text = stepper.step.lower(xs, xs).as_text()
    text = re.sub(r"module @\S+", "module", text)  # the module's name is not the program
    print(f"{lmkit.__file__}: step program sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]} "
          f"({len(text):,} characters)")


if __name__ == "__main__":
    main()
