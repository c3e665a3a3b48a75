"""`defaults`: does every built-in architecture learn with its defaults?

Not a speed benchmark: a first run's quality. Each built-in architecture is trained for 400
steps on the embedded Tiny Shakespeare (char level) with no other key set, so the global
defaults plus the architecture's own `config_defaults` decide everything, as for a new user's
``%%lmtrain`` with ``arch = "..."`` and ``max_steps = 400``. The reference measured in the same
run is the unigram loss of the corpus (predicting character frequencies only, what a model that
learned nothing scores), and `lstm` trained with the global defaults instead of its own (4 layers,
learning rate 1e-3, 100 warm-up steps: what a first run got before architectures declared
defaults); the target is a validation loss below 2.7 for every architecture.

    python -m benchmarks defaults            # the measured table: docs/defaults.md
"""

from __future__ import annotations

import tempfile
import time

from ._common import Result

STEPS = 400
TARGET = 2.7


def run(quick: bool = False) -> Result:
    import lmkit
    from lmkit.config import TrainConfig
    from lmkit.data.corpus import open_corpus
    from lmkit.registry import BUILTIN, architectures
    from lmkit.training.language_model import unigram_loss

    steps = 20 if quick else STEPS
    names = [e.name for e in architectures.list() if e.source == BUILTIN]
    figures: dict[str, float] = {}
    ratios: dict[str, float] = {}
    rows = [["architecture", "val_loss", "seconds", "keys from the architecture"]]
    unigram = None
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            t0 = time.perf_counter()
            run = lmkit.train(arch=name, max_steps=steps, out=f"{tmp}/{name}", sample_tokens=0,
                              reporters=[])
            seconds = time.perf_counter() - t0
            if unigram is None:
                text = "".join(open_corpus("tinyshakespeare").chunks())
                unigram = unigram_loss(run.tokenizer.encode_array(text))
            val = float(run.summary["val_loss"])
            figures[f"{name}_val_loss"] = round(val, 4)
            figures[f"{name}_seconds"] = round(seconds, 1)
            ratios[f"{name}_val_loss"] = round(val, 4)
            tuned = ", ".join(f"{k}={v}" for k, v in
                              getattr(architectures.get(name), "config_defaults", {}).items())
            rows.append([name, f"{val:.3f}", f"{seconds:.0f}", tuned or "(global defaults)"])
        # the reference: the same first run with the global defaults set explicitly
        global_defaults = {k: getattr(TrainConfig(), k) for k in
                           getattr(architectures.get("lstm"), "config_defaults", {})}
        t0 = time.perf_counter()
        run = lmkit.train(arch="lstm", max_steps=steps, out=f"{tmp}/reference", sample_tokens=0,
                          reporters=[], **global_defaults)
        seconds = time.perf_counter() - t0
        reference = float(run.summary["val_loss"])
        figures["lstm_global_defaults_val_loss"] = round(reference, 4)
        figures["lstm_global_defaults_seconds"] = round(seconds, 1)
        rows.append(["lstm, global defaults", f"{reference:.3f}", f"{seconds:.0f}",
                     ", ".join(f"{k}={v}" for k, v in global_defaults.items()) + " (reference)"])
    figures["unigram_loss"] = round(float(unigram or 0.0), 4)
    figures["steps"] = steps
    rows.append(["(unigram reference)", f"{unigram:.3f}", "", "character frequencies only"])
    return Result(figures, ratios, {} if quick else {k: ("<", TARGET) for k in ratios}, rows,
                  notes=[f"{steps} steps per architecture, every other key at its default"])
