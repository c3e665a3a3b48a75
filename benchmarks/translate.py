"""`translate`: Multi30K BLEU at equal wall-clock training time, lmkit vs a PyTorch `nn.Transformer`.

Both learn from the same training pairs with the same tokenizer (the one lmkit fits, saved and
handed to the reference), train for the same seconds (compilation counts against lmkit) and
decode the same test sources greedily; sacreBLEU scores both against the same references (lmkit's
model is also decoded with 4 beams, reported beside; the race compares greedy with greedy). lmkit:
a decoder-only `gpt` on ``source \\n target \\n`` (`lmkit.evaluate` with ``max_seconds``);
PyTorch: the tutorial's encoder-decoder (`benchmarks.translate_torch`), in its own process, after
lmkit's, so the two never share the CPU.

The data is ``$LMKIT_MULTI30K`` (the folder of ``{train,test_2016_flickr}.{de,en}``) or, with
``--quick`` or when it is unset, the 48-pair sample of the tests (a smoke test, not a race).
``$LMKIT_TRANSLATE_SECONDS`` sets the seconds of training each (default 1800 on the full data).
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
#: lmkit's contender: BPE shared by both languages, a 4-block `gpt` (docs/evaluation.md, Multi30K):
#: the recipe that scored BLEU 29.5 greedy and 31.8 with 4 beams on test_2016_flickr; its 2,400
#: steps took 29.5 minutes on a quiet 2-core machine (on a slower one `max_seconds` stops it
#: first, and lmkit warns)
RECIPE = dict(arch="gpt", tokenizer="bpe", vocab_size=6000, embed_dim=256, layers=4, heads=4, max_length=96,
              batch_size=64, learning_rate=2e-3, weight_decay=0.1, max_steps=2400)


def _budget(quick: bool, data: Path) -> tuple[float, int]:
    """Seconds of training each and the most new tokens per output."""
    if quick or data == SAMPLE:
        return 20.0, 30
    return float(os.environ.get("LMKIT_TRANSLATE_SECONDS", "1800")), 60


def run(quick: bool = False) -> Result:
    import sacrebleu

    import lmkit
    from lmkit.tokenizers import save_tokenizer

    data = SAMPLE if quick else Path(os.environ.get("LMKIT_MULTI30K", SAMPLE))
    seconds, new_tokens = _budget(quick, data)
    references = (data / "test_2016_flickr.en").read_text(encoding="utf-8").rstrip("\n").split("\n")
    sources = (data / "test_2016_flickr.de").read_text(encoding="utf-8").rstrip("\n").split("\n")
    recipe = {**RECIPE, "vocab_size": 300, "max_length": 160} if data == SAMPLE else RECIPE
    mine = lmkit.evaluate("scratch", task="multi30k", data=str(data), **recipe, max_seconds=seconds,
                          max_new_tokens=new_tokens)
    beam_bleu = sacrebleu.corpus_bleu(mine.decode(sources, num_beams=4), [references]).score
    with tempfile.TemporaryDirectory() as tmp:
        out, tokenizer = Path(tmp) / "torch.json", save_tokenizer(mine.tokenizer, Path(tmp) / "tokenizer.json")
        subprocess.run([sys.executable, "-m", "benchmarks.translate_torch", str(data), "de", "en", str(seconds),
                        str(out), str(tokenizer), str(new_tokens)], cwd=ROOT, check=True)
        theirs = json.loads(out.read_text(encoding="utf-8"))
    torch_bleu = sacrebleu.corpus_bleu(theirs["hypotheses"], [references]).score
    figures = {"seconds": seconds, "examples": len(references), "lmkit_bleu": mine.metrics["bleu"],
               "lmkit_bleu_beam4": beam_bleu, "lmkit_signature": mine.to_dict()["signatures"]["bleu"],
               "lmkit_steps": mine.training["steps"], "lmkit_train_s": mine.training["seconds"],
               "torch_bleu": torch_bleu, "torch_steps": theirs["steps"],
               "torch_parameters": theirs["parameters"], "tokenizer": f"bpe {mine.tokenizer.vocab_size}",
               "data": str(data.relative_to(ROOT)) if data == SAMPLE else "LMKIT_MULTI30K"}
    rows = [["contender", "BLEU", "steps"],
            ["lmkit gpt (decoder-only)", f"{mine.metrics['bleu']:.2f}", str(mine.training["steps"])],
            ["lmkit gpt, 4 beams", f"{beam_bleu:.2f}", str(mine.training["steps"])],
            ["PyTorch nn.Transformer", f"{torch_bleu:.2f}", str(theirs["steps"])]]
    return Result(figures, {"bleu_difference": mine.metrics["bleu"] - torch_bleu},
                  {} if quick else {"bleu_difference": (">=", 0.0)}, rows,
                  notes=[f"{seconds:.0f} s of training each; BLEU on {len(references)} test_2016_flickr sentences"])
