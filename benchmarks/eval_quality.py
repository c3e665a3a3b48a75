"""Quality of `lmkit.evaluate` on the shared GLUE / IMDb data (a benchmark, not a test).

    python benchmarks/eval_quality.py DATA_DIR [sst2 cola mrpc imdb]

DATA_DIR holds ``glue/{SST-2,CoLA,MRPC}`` and ``imdb/`` (see ../shared/data/README.md).
Prints one line per measurement (task, model, scores, wall time) and writes them as JSON lines
to ``eval_quality.jsonl`` in the working directory.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import lmkit

SCRATCH = {"arch": "lstm", "tokenizer": "word", "embed_dim": 128, "units": 128, "layers": 1}


def measure(name: str, run_or_path: object, task: str, data: Path, **options: object) -> dict:
    t0 = time.monotonic()
    result = lmkit.evaluate(run_or_path, task=task, data=data, **options)
    row = {"task": task, "model": name, **result.metrics, "train_s": round(result.training.get("seconds", 0.0), 1),
           "wall_s": round(time.monotonic() - t0, 1), "options": options}
    print(json.dumps(row), flush=True)
    with open("eval_quality.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps(row) + "\n")
    return row


def main(argv: list[str]) -> None:
    data = Path(argv[0])
    wanted = set(argv[1:]) or {"sst2", "cola", "mrpc", "imdb"}
    glue = data / "glue"
    if "sst2" in wanted:
        measure("scratch-lstm", "scratch", "glue/sst2", glue, epochs=2, batch_size=64, max_length=64, **SCRATCH)
    if "cola" in wanted:
        measure("scratch-lstm", "scratch", "glue/cola", glue, epochs=3, batch_size=32, max_length=64, **SCRATCH)
    if "mrpc" in wanted:
        measure("scratch-lstm", "scratch", "glue/mrpc", glue, epochs=2, batch_size=32, max_length=96, **SCRATCH)
    if "imdb" in wanted:
        imdb = data / "imdb"
        opts = {"epochs": 6, "batch_size": 32, "max_length": 256, "learning_rate": 2e-3}
        measure("scratch-lstm", "scratch", "imdb", imdb, vocab_size=10000, **opts, **SCRATCH)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            run = lmkit.train(arch="lstm", data=str(imdb / "train"), tokenizer="word", vocab_size=10000,
                              embed_dim=128, units=128, layers=1, seq_len=64, batch_size=32,
                              max_steps=1500, eval_every=500, learning_rate=3e-3, sample_tokens=0,
                              out=str(Path(tmp) / "lm"), reporters=[])
            print(f"pretrained LM on imdb/train in {time.monotonic() - t0:.0f}s: "
                  f"val_loss {run.summary.get('val_loss')}", flush=True)
            measure("pretrained-lstm", run, "imdb", imdb, backbone_lr_multiplier=0.3, **opts)
            measure("pretrained-lstm+gradual", run, "imdb", imdb, backbone_lr_multiplier=0.3,
                    gradual_unfreezing=True, **opts)


if __name__ == "__main__":
    main(sys.argv[1:])
