"""`finetune_hf`: fine-tuning MiniLM on SST-2 and MRPC, lmkit against Hugging Face's `Trainer`.

The reference is what a user would run: `transformers.Trainer` (PyTorch) fine-tuning
`BertForSequenceClassification` with dynamic padding (`DataCollatorWithPadding`) and
``train_sampling_strategy="group_by_length"`` (``group_by_length=True`` before transformers 5),
on all-MiniLM-L6-v2 as its package ships it (`all_minilm_l6_v2.extract_model`). lmkit fine-tunes
the same folder with ``lmkit.evaluate(folder, task, data, **options)``. Both follow `RECIPE`: the
same batch size, epochs, peak learning rate (AdamW, linear decay to 0, no warm-up, no weight
decay, gradients clipped at 1.0), ``max_length`` and seed, on the GLUE fixtures of
tests/fixtures/eval/glue (SST-2: 400 training sentences, 120 dev; MRPC: 200 pairs, 60 dev;
3 epochs). Jobs that small are mostly start-up and compilation; ``LMKIT_GLUE=<folder>`` (a
folder holding ``SST-2/`` and ``MRPC/`` as GLUE distributes them, such as ../shared/data/glue)
measures at a size users run instead: the first `SIZE_TRAIN` training examples of each task
(``LMKIT_GLUE_TRAIN`` to change it: SST-2's first 4,000 sentences, MRPC's whole 3,668 pairs),
their whole dev splits, 1 epoch (`SIZE_RECIPE`), one round. ``--quick`` always runs the
fixture. ``LMKIT_PRECISION=mixed_bfloat16`` runs both in bfloat16: lmkit with
``precision="mixed_bfloat16"``, the `Trainer` with ``bf16=True`` (PyTorch's CPU autocast).
What differs is each library's own: the head (Hugging Face's pooler + linear layer on [CLS]; lmkit's
linear head on the [CLS] state, dropout 0.1 before it in both), the initialisation of the head, the
batch order.

Every run is a **whole process** (import, load, tokenize, train, score the dev split), timed from
outside; the contenders alternate in `ROUNDS` interleaved rounds per task, and the fastest run of
each counts (PyTorch with all threads and with one, the faster counts). Each process also reports
its own training time (lmkit: the fine-tuning's clock, compilation included; Hugging Face: the
Trainer's ``train_runtime``), from which examples/s of training = training examples x epochs ÷
that time, and its dev accuracy: nothing in quality may get worse. lmkit's process also reports
where its fine-tuning's time went (``phases_s``: the first dispatch holds the step's
compilation and the first `log_every` steps, one compiled call), the XLA programs it compiled or
read from the persistent cache, the shape of its packed rows (``packed``: width and row
counts), and the seconds of JAX's stages per compiled function (``stages_s``, `STAGE_TIMES`:
tracing, lowering, compilation or the persistent cache's lookup, and the cache's load within
it), for the whole process: the training step (``train_chunk``) and the scoring program
(``packed_classify_body``) among them.

`training_floor` is what the hardware allows: the training examples' real tokens (truncated to
``max_length``) x 3 passes of the encoder's FLOPs at this machine's matmul rate
(`benchmarks.embed_st.floor`); the report gives the largest speed-up over the `Trainer` it
leaves, and lmkit's share of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import Result, precision, ratio

GLUE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "eval" / "glue"
RECIPE = {"batch_size": 32, "epochs": 3, "learning_rate": 5e-5, "max_length": 128, "seed": 0,
          "precision": precision()}
QUICK_RECIPE = {**RECIPE, "epochs": 1}
#: at a size users run (``LMKIT_GLUE``): one epoch over this many training examples per task
SIZE_TRAIN = 4000
SIZE_RECIPE = {**RECIPE, "epochs": 1}
TASKS = {"glue/sst2": "SST-2", "glue/mrpc": "MRPC"}
ROUNDS = 2
#: steps of lmkit's first dispatch: the config's `log_every` (its default), one compiled call
FIRST_DISPATCH_STEPS = 20
#: run first in an lmkit process: ``stage_s``, JAX's stage durations (`jax.monitoring`) summed by
#: stage and compiled function ("trace train_chunk", "compile packed_classify_body", ...).
#: "compile" is XLA's compilation, or on a hit the persistent cache's lookup (the module's key
#: hashed, the entry read and loaded: "cache_load")
STAGE_TIMES = r"""
from jax import monitoring as _monitoring
_STAGES = {"/jax/core/compile/jaxpr_trace_duration": "trace",
           "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
           "/jax/core/compile/backend_compile_duration": "compile",
           "/jax/compilation_cache/cache_retrieval_time_sec": "cache_load"}
stage_s = {}
def _on_stage(event, seconds, fun_name="", **_):
    if event in _STAGES:
        name = fun_name[4:-1] if fun_name.startswith("jit(") else fun_name
        key = f"{_STAGES[event]} {name}".strip()
        stage_s[key] = stage_s.get(key, 0.0) + seconds
_monitoring.register_event_duration_secs_listener(_on_stage)
def stages():
    return {k: round(v, 3) for k, v in sorted(stage_s.items()) if v >= 0.01}
"""

_LMKIT = STAGE_TIMES + r"""
import json, sys
import lmkit
folder, task, data, recipe = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
result = lmkit.evaluate(folder, task=task, data=data, learning_rate=recipe["learning_rate"],
                        backbone_lr_multiplier=1.0, batch_size=recipe["batch_size"], epochs=recipe["epochs"],
                        max_steps=None, max_length=recipe["max_length"], seed=recipe["seed"],
                        optimizer="adamw", schedule="linear", min_lr_ratio=0.0, weight_decay=0.0,
                        clipnorm=1.0, pooling="cls", head_dropout=0.1,
                        precision=recipe["precision"])
print("RESULT " + json.dumps({"accuracy": result.metrics["accuracy"],
                              "train_seconds": result.training["seconds"], "steps": result.training["steps"],
                              "phases_s": result.training.get("phases_s"), "packed": result.training.get("packed"),
                              "compilations": result.training.get("compilations"),
                              "stages_s": stages()}))
"""

_HF = r"""
import csv, json, sys, tempfile
import numpy as np
import datasets, transformers
folder, task, data, recipe = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
columns = {"glue/sst2": (["sentence"], "label"), "glue/mrpc": (["#1 String", "#2 String"], "Quality")}[task]
tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
def split(name):
    with open(f"{data}/{name}.tsv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    encoded = tokenizer(*[[r[c] for r in rows] for c in columns[0]], truncation=True,
                        max_length=recipe["max_length"])
    return datasets.Dataset.from_dict({**encoded, "labels": [int(r[columns[1]]) for r in rows]})
train, dev = split("train"), split("dev")
model = transformers.BertForSequenceClassification.from_pretrained(folder, num_labels=2)
args = transformers.TrainingArguments(
    output_dir=tempfile.mkdtemp(), per_device_train_batch_size=recipe["batch_size"],
    per_device_eval_batch_size=256, num_train_epochs=recipe["epochs"], learning_rate=recipe["learning_rate"],
    lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=recipe["seed"],
    train_sampling_strategy="group_by_length", save_strategy="no", report_to="none", use_cpu=True,
    disable_tqdm=True, logging_strategy="no", bf16=recipe["precision"] == "mixed_bfloat16")
trainer = transformers.Trainer(model=model, args=args, train_dataset=train,
                               data_collator=transformers.DataCollatorWithPadding(tokenizer))
metrics = trainer.train().metrics
predictions = trainer.predict(dev)
accuracy = float((predictions.predictions.argmax(-1) == np.asarray(dev["labels"])).mean())
print("RESULT " + json.dumps({"accuracy": accuracy, "train_seconds": metrics["train_runtime"],
                              "steps": trainer.state.global_step}))
"""


def _process(script: str, folder: Path, glue: Path, task: str, recipe: dict[str, Any],
             threads: int | None = None) -> dict[str, Any]:
    """Run one whole fine-tuning process; its wall time and the figures it printed."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)  # PyTorch's intra-op pool
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, str(folder), task, str(glue / TASKS[task]),
                           json.dumps(recipe)], capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"the {task} fine-tuning process failed:\n{done.stderr[-3000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return {"wall_s": round(wall, 2), **json.loads(line[len("RESULT "):])}


def _examples(task: str, glue: Path = GLUE) -> int:
    with open(glue / TASKS[task] / "train.tsv", encoding="utf-8-sig") as f:
        return sum(1 for _ in f) - 1


def _sized_glue(source: Path, into: Path, examples: int) -> Path:
    """`source`'s SST-2 and MRPC with their first `examples` training rows and whole dev splits,
    copied line by line into `into` (GLUE's TSV files hold one example a line, after a header)."""
    for name in TASKS.values():
        (into / name).mkdir(parents=True)
        for split, keep in (("train", examples + 1), ("dev", None)):
            with open(source / name / f"{split}.tsv", "rb") as f:
                lines = f.readlines()
            (into / name / f"{split}.tsv").write_bytes(b"".join(lines[:keep]))
    return into


def _data(quick: bool, tmp: str) -> tuple[Path, dict[str, Any]]:
    """The GLUE folder to fine-tune on and the recipe: the fixtures (3 epochs; 1 with
    `quick`), or ``$LMKIT_GLUE`` cut to ``$LMKIT_GLUE_TRAIN`` examples (1 epoch)."""
    source = os.environ.get("LMKIT_GLUE")
    if quick or not source:
        return GLUE, QUICK_RECIPE if quick else RECIPE
    examples = int(os.environ.get("LMKIT_GLUE_TRAIN", SIZE_TRAIN))
    return _sized_glue(Path(source), Path(tmp) / "glue", examples), SIZE_RECIPE


def training_floor(mini: Any, glue: Path, task: str, recipe: dict[str, Any]) -> dict[str, float]:
    """`benchmarks.embed_st.floor` of one fine-tuning of `mini` (a `Pretrained`): every
    training example's tokens, each epoch, three passes."""
    from lmkit.evaluation.loaders import load_split

    from .embed_st import floor

    train = load_split(task, str(glue / TASKS[task]), "train")
    pairs = None if train.text_b is None else list(train.text_b)
    rows = mini.tokenizer.encode_inputs(list(train.text_a), pairs, max_length=recipe["max_length"])
    return floor(mini.config, [len(r) for r in rows] * recipe["epochs"], passes=3)


def run(quick: bool = False) -> Result:
    import all_minilm_l6_v2
    import torch

    import lmkit

    tasks = list(TASKS)[:1] if quick else list(TASKS)
    cores = torch.get_num_threads()
    contenders = {"lmkit": (_LMKIT, None), f"hf_trainer_{cores}_threads": (_HF, None),
                  "hf_trainer_1_thread": (_HF, 1)}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {t: {n: [] for n in contenders} for t in tasks}
    with tempfile.TemporaryDirectory() as tmp:
        folder = all_minilm_l6_v2.extract_model(tmp)
        glue, recipe = _data(quick, tmp)
        trained = {task: _examples(task, glue) * recipe["epochs"] for task in tasks}
        mini = lmkit.from_pretrained(folder)  # its tokenizer and sizes, for the floors
        floors = {task: training_floor(mini, glue, task, recipe) for task in tasks}
        for r in range(1 if quick or glue != GLUE else ROUNDS):
            for task in tasks:
                names = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
                for name in names:
                    script, threads = contenders[name]
                    runs[task][name].append(_process(script, folder, glue, task, recipe, threads))
                    print(f"{task} {name}: {runs[task][name][-1]}", flush=True)  # minutes apart
    return _report(runs, recipe, trained, "fixtures" if glue == GLUE else "LMKIT_GLUE", floors)


def _report(runs: dict[str, dict[str, list[dict[str, Any]]]], recipe: dict[str, Any],
            trained_examples: dict[str, int] | None = None, data: str = "fixtures",
            floors: dict[str, dict[str, float]] | None = None) -> Result:
    """The table and ratios; `trained_examples` per task (default: the fixture's, each epoch)."""
    trained_examples = trained_examples or {t: _examples(t) * recipe["epochs"] for t in runs}
    figures: dict[str, Any] = {"recipe": recipe, "data": data, "trained_examples": trained_examples,
                               "runs": runs}
    ratios: dict[str, float] = {}
    targets: dict[str, tuple[str, float]] = {}
    rows = [["task", "contender", "train examples/s", "train s", "whole process s", "dev accuracy"]]
    notes = []
    for task, by_name in runs.items():
        trained = trained_examples[task]
        best = {name: min(found, key=lambda f: f["wall_s"]) for name, found in by_name.items()}
        speed = {name: round(trained / min(f["train_seconds"] for f in found), 1)
                 for name, found in by_name.items()}
        hf = max((n for n in by_name if n.startswith("hf_")), key=lambda n: speed[n])
        short = task.split("/")[1]
        ratios[f"{short}_train_speedup_vs_trainer"] = ratio(speed["lmkit"], speed[hf])
        ratios[f"{short}_whole_process_speedup_vs_trainer"] = ratio(
            min(f["wall_s"] for f in by_name[hf]), best["lmkit"]["wall_s"])
        accuracy = {name: [f["accuracy"] for f in found] for name, found in by_name.items()}
        ratios[f"{short}_dev_accuracy_lmkit_minus_trainer"] = round(
            min(accuracy["lmkit"]) - max(accuracy[hf]), 4)
        targets[f"{short}_train_speedup_vs_trainer"] = (">=", 2.0)
        for name, found in by_name.items():
            rows.append([short, name, f"{speed[name]:.1f}",
                         f"{min(f['train_seconds'] for f in found):.1f}", f"{best[name]['wall_s']:.1f}",
                         "/".join(f"{a:.3f}" for a in accuracy[name])])
        notes.append(f"{short} ({data}): reference {hf}; {trained} examples trained per run; dev accuracy of every "
                     f"run shown (lmkit's worst minus the reference's best in the ratios)")
        notes += [f"{short} lmkit: {line}" for line in _first_dispatch(best["lmkit"])]
        if floors and task in floors:
            limit = floors[task]
            figures.setdefault("floor", {})[short] = limit
            fastest = {n: min(f["train_seconds"] for f in found) for n, found in by_name.items()}
            ratios[f"{short}_floor_speedup_vs_trainer"] = ratio(fastest[hf], limit["floor_s"])
            ratios[f"{short}_lmkit_share_of_floor"] = ratio(limit["floor_s"], fastest["lmkit"])
            notes.append(f"{short} floor: {limit['gflop']} GFLOP (3 passes over the real tokens) at "
                         f"{limit['matmul_gflop_per_s']} GFLOP/s = {limit['floor_s']} s: "
                         f"{ratios[f'{short}_floor_speedup_vs_trainer']:.2f}x {hf}'s training; lmkit "
                         f"takes {ratios[f'{short}_lmkit_share_of_floor']:.2f} of its time in it")
    return Result(figures, ratios, targets, rows, notes)


def _first_dispatch(run: dict[str, Any]) -> list[str]:
    """Where lmkit's first dispatch and its compiled programs' time went, in words: the
    first dispatch less its `FIRST_DISPATCH_STEPS` steps at the pace of the later ones, and
    the JAX stages of the programs over 0.1 s."""
    phases, stages = run.get("phases_s") or {}, run.get("stages_s") or {}
    lines = []
    later = run.get("steps", 0) - FIRST_DISPATCH_STEPS
    if "first dispatch" in phases and later > 0 and "training" in phases:
        step_s = phases["training"] / later
        rest = phases["first dispatch"] - FIRST_DISPATCH_STEPS * step_s
        lines.append(f"first dispatch {phases['first dispatch']:.1f} s = {FIRST_DISPATCH_STEPS} "
                     f"steps at {step_s:.3f} s + {rest:.1f} s")
    big = {k: v for k, v in stages.items() if v >= 0.1}
    if big:
        lines.append("JAX stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in big.items()))
    return lines
