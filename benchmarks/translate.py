"""`translate`: Multi30K BLEU at equal wall-clock training time, lmkit vs a PyTorch `nn.Transformer`.

Both learn from the same training pairs with character vocabularies, train for the same seconds
(compilation counts against lmkit) and decode the same test sources greedily; sacreBLEU scores both
against the same references. lmkit: a decoder-only `gpt` on ``source \\n target \\n``
(`lmkit.evaluate` with ``max_seconds``); PyTorch: the tutorial's encoder-decoder
(`benchmarks.translate_torch`), in its own process so the two never share the CPU.

The data is ``$LMKIT_MULTI30K`` (the folder of ``{train,test_2016_flickr}.{de,en}``) or, with
``--quick`` or when it is unset, the 48-pair sample of the tests (a smoke test, not a race).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ._common import Result

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "fixtures" / "multi30k"


def run(quick: bool = False) -> Result:
    import sacrebleu

    import lmkit

    data = Path(os.environ.get("LMKIT_MULTI30K", SAMPLE)) if not quick else SAMPLE
    seconds = 20.0 if quick or data == SAMPLE else 1800.0
    examples = 4 if quick else 1000
    new_tokens = 30 if quick else 120  # characters of an output
    references = (data / "test_2016_flickr.en").read_text(encoding="utf-8").rstrip("\n").split("\n")[:examples]
    mine = lmkit.evaluate("scratch", task="multi30k", data=str(data), arch="gpt", tokenizer="char",
                          embed_dim=256, layers=4, heads=4, max_length=256, batch_size=32,
                          learning_rate=2e-3, max_steps=100_000, max_seconds=seconds,
                          max_eval_examples=examples if examples < len(references) else None,
                          max_new_tokens=new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "torch.json"
        subprocess.run([sys.executable, "-m", "benchmarks.translate_torch", str(data), "de", "en", str(seconds),
                        str(out), str(examples), str(new_tokens)], cwd=ROOT, check=True)
        theirs = json.loads(out.read_text(encoding="utf-8"))
    torch_bleu = sacrebleu.corpus_bleu(theirs["hypotheses"], [references]).score
    figures = {"seconds": seconds, "examples": examples, "lmkit_bleu": mine.metrics["bleu"],
               "lmkit_steps": mine.training["steps"], "torch_bleu": torch_bleu, "torch_steps": theirs["steps"],
               "torch_parameters": theirs["parameters"], "data": str(data.relative_to(ROOT)) if data == SAMPLE else "LMKIT_MULTI30K"}
    rows = [["contender", "BLEU", "steps"],
            ["lmkit gpt (decoder-only)", f"{mine.metrics['bleu']:.2f}", str(mine.training["steps"])],
            ["PyTorch nn.Transformer", f"{torch_bleu:.2f}", str(theirs["steps"])]]
    return Result(figures, {"bleu_difference": mine.metrics["bleu"] - torch_bleu},
                  {} if quick else {"bleu_difference": (">=", 0.0)}, rows,
                  notes=[f"{seconds:.0f} s of training each; BLEU on {examples} test_2016_flickr sentences"])
