"""`lora_llama`: a tiny Llama continued on WikiText-2, LoRA against full training, loss curves.

The Llama is made by `transformers` with random weights (4 layers, width 128, 4 query heads
over 2 key/value heads) and a byte-level BPE tokenizer trained on the training text: no
pretrained checkpoint is needed, so the figures show what each mode learns from the same
starting point, not what adapting a trained model gives. Both runs continue it (`init=`) on
WikiText-2's validation file and are validated on its test file (the real data when
``LMKIT_WIKITEXT2`` names the folder holding ``wiki.valid.tokens`` and ``wiki.test.tokens``,
else the small copy in tests/fixtures, split in two); LoRA trains rank-8 adapters on every
projection of the attention and the MLP at a 10× higher learning rate, full training every
weight. Each run is one process; the curves (validation loss against the steps) go to
``docs/lora_llama.svg``. ``--quick``: 20 steps, no chart.

    python -m benchmarks.lora_llama --steps 3    # only step times: LoRA factored, merged, full

times the three steps on a Llama of 4 layers as wide as SmolLM-135M's (`SMOLLM_LAYER`; batches
of 16 x 128 tokens) in one process, interleaved:
the factored LoRA step (``x W + s (x A) B``, what lmkit runs), the merged one (``x (W + s A B)``,
whose gradient forms ``xᵀ dy`` of every adapted kernel) and full training.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ._common import Result, samples_main
from ._svg import write_curves
from .startup import _python

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "docs" / "lora_llama.svg"
FIXTURE = ROOT / "tests" / "fixtures" / "data" / "wikitext2_valid_6k.txt"
STEPS = 300
#: the step timings' layers: SmolLM-135M's width, MLP, query and key/value heads (4 layers)
SMOLLM_LAYER = (576, 1536, 9, 3)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODES = {"LoRA r=8, every projection, lr 3e-3": dict(adapter="lora", lora_rank=8,
                                                     lora_targets=TARGETS, learning_rate=3e-3),
         "full, lr 3e-4": dict(learning_rate=3e-4)}

_MAKE = """
import sys, torch, transformers
from tokenizers import ByteLevelBPETokenizer
folder, text = sys.argv[1], sys.argv[2]
width, ffn, heads, kv_heads = (int(n) for n in sys.argv[3:7]) if len(sys.argv) > 3 else (128, 344, 4, 2)
tok = ByteLevelBPETokenizer()
tok.train([text], vocab_size=2000, show_progress=False)
config = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=width,
    intermediate_size=ffn, num_hidden_layers=4, num_attention_heads=heads, num_key_value_heads=kv_heads,
    max_position_embeddings=256, bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
torch.manual_seed(0)
transformers.LlamaForCausalLM(config).float().save_pretrained(folder, safe_serialization=True)
tok.save(folder + "/tokenizer.json")
print("made")
"""

_TRAIN = """
import json, sys, time
import lmkit
from lmkit.engine.events import EvalEvent
folder, train, valid, steps, options = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
t0 = time.perf_counter()
curve = []
report = lambda e: curve.append((time.perf_counter() - t0, e.step, e.metrics["val_loss"])) if isinstance(e, EvalEvent) else None
run = lmkit.train(init=folder, data=train, validation_data=valid, max_steps=steps, batch_size=16,
                  seq_len=128, eval_every=max(1, steps // 10), eval_batches=8, seed=0,
                  out=sys.argv[6], reporters=[report], **options)
summary = json.load(open(sys.argv[6] + "/summary.json"))
print(json.dumps({"curve": curve, "seconds": time.perf_counter() - t0,
                  "trainable": summary["trainable_parameters"],
                  "optimizer_state": summary["optimizer_state"]}))
"""


# The three steps of one model in one process, their calls interleaved (`_common.interleave`)
_PACE = """
import json, sys
import lmkit  # before keras: it sets the backend
import keras, numpy as np
from benchmarks._common import interleave, timed_steps
from lmkit.adapters.lora import lora_group
from lmkit.config import TrainConfig
from lmkit.losses import nll
from lmkit.param_groups import Frozen, Optimize, ParamGroups
from lmkit.train_step import TrainStep
loss = lambda labels, logits: keras.ops.mean(nll(labels, logits))
model = lmkit.from_pretrained(sys.argv[1]).model
targets = json.loads(sys.argv[2])
variables = model.trainable_variables
def lora(factored):
    held, group = lora_group(model, variables, TrainConfig(adapter="lora", lora_targets=targets),
                             keras.optimizers.Adam(3e-3))
    group.factored = factored
    labels = ["lora" if h else "frozen" for h in held]
    return TrainStep(model, ParamGroups(variables, labels, {"lora": group, "frozen": Frozen()}), loss)
steps = {"lora_factored": lora(True), "lora_merged": lora(False),
         "full": TrainStep(model, ParamGroups(variables, ["all"] * len(variables),
                                              {"all": Optimize(keras.optimizers.Adam(3e-4))}), loss)}
tokens = np.random.default_rng(0).integers(0, model.vocab_size, (1, 16, 129)).astype("int32")
xs, ys = tokens[:, :, :-1], tokens[:, :, 1:]
for step in steps.values():  # compiled before timing
    np.asarray(step.train(xs, ys))
paced = interleave({n: (lambda s=s: timed_steps(lambda: np.asarray(s.train(xs, ys)), 4))
                    for n, s in steps.items()}, rounds=3)
print(json.dumps({n: 1000 * v["median_s"] for n, v in paced.items()}))
"""


def step_times(samples: int) -> list[dict]:
    """`samples` interleaved measurements of the three steps (`_PACE`), ms per step, each
    printed with the machine's load average."""
    got = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, _, _ = _corpora(work)
        sizes = [str(n) for n in SMOLLM_LAYER]
        _python(f"import sys; sys.argv = ['x', {str(work / 'llama')!r}, {str(train)!r}, "
                f"*{sizes!r}]\n{_MAKE}")
        for _ in range(samples):
            args = [str(work / "llama"), json.dumps(TARGETS)]
            ms = json.loads(_python(f"import sys; sys.argv = ['x', *{args!r}]\n{_PACE}"))
            got.append({**ms, "load_average": os.getloadavg()[0]})
            print(f"LoRA factored {ms['lora_factored']:.1f} ms, merged {ms['lora_merged']:.1f} ms, "
                  f"full {ms['full']:.1f} ms: full / factored {ms['full'] / ms['lora_factored']:.2f}x, "
                  f"merged / factored {ms['lora_merged'] / ms['lora_factored']:.2f}x "
                  f"(load average {got[-1]['load_average']:.1f})", flush=True)
    return got


def _corpora(work: Path) -> tuple[Path, Path, str]:
    """(training text, validation text, where they came from)."""
    folder = os.environ.get("LMKIT_WIKITEXT2")
    if folder:
        return (Path(folder) / "wiki.valid.tokens", Path(folder) / "wiki.test.tokens",
                "$LMKIT_WIKITEXT2 (wiki.valid.tokens; validated on wiki.test.tokens)")
    lines = FIXTURE.read_text().splitlines(keepends=True)
    (work / "train.txt").write_text("".join(lines[: len(lines) * 3 // 4]))
    (work / "valid.txt").write_text("".join(lines[len(lines) * 3 // 4:]))
    return work / "train.txt", work / "valid.txt", "tests/fixtures/data/wikitext2_valid_6k.txt"


def write_svg(curves: dict[str, list]) -> None:
    """The validation loss of each mode against its steps (the two processes ran one after the
    other on a shared machine, so their wall times are not comparable); the dashed line: the
    lower final loss."""
    write_curves({name: [(step, step, loss) for _, step, loss in curve]
                  for name, curve in curves.items()}, SVG,
                 min(curve[-1][2] for curve in curves.values()), "validation loss (nats)",
                 x_label="optimizer steps")


def run(quick: bool = False) -> Result:
    steps = 20 if quick else STEPS
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, valid, source = _corpora(work)
        _python(f"import sys; sys.argv = ['x', {str(work / 'llama')!r}, {str(train)!r}]\n{_MAKE}")
        got = {}
        for i, (name, options) in enumerate(MODES.items()):
            args = [str(work / "llama"), str(train), str(valid), str(steps), json.dumps(options),
                    str(work / f"run{i}")]
            got[name] = json.loads(_python(f"import sys; sys.argv = ['x', *{args!r}]\n{_TRAIN}"))
            print(f"{name}: {got[name]}", flush=True)
    lora, full = got.values()
    notes = []
    if not quick:
        write_svg({n: r["curve"] for n, r in got.items()})
        notes.append(f"curves: {SVG.relative_to(ROOT)}")
    figures = {"data": source, "steps": steps, "batch_size": 16, "seq_len": 128,
               **{f"{key}_{k}": v for key, r in zip(("lora", "full"), got.values())
                  for k, v in r.items()}}
    ratios = {"final_val_loss_lora_minus_full": round(lora["curve"][-1][2] - full["curve"][-1][2], 3),
              "trainable_full_over_lora": round(full["trainable"] / lora["trainable"], 1)}
    rows = [["figure", *got]]
    rows += [["trained numbers", *(f"{r['trainable']:,}" for r in got.values())],
             ["optimizer state", *(f"{r['optimizer_state']:,}" for r in got.values())],
             ["first validation loss", *(f"{r['curve'][0][2]:.3f}" for r in got.values())],
             ["last validation loss", *(f"{r['curve'][-1][2]:.3f}" for r in got.values())],
             ["process wall time", *(f"{r['seconds']:.0f} s" for r in got.values())]]
    return Result(figures, ratios, {}, rows, notes)


if __name__ == "__main__":
    samples_main("python -m benchmarks.lora_llama",
                 "Step times of LoRA (factored and merged) and full training on a SmolLM-wide "
                 "Llama (`python -m benchmarks lora_llama` runs the curves).", step_times)
