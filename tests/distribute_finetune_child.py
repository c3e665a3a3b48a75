"""Fine-tuning on a mesh of forced host devices; part of tests/distribute_child.py's process
(`results()`), or alone:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/distribute_finetune_child.py OUT

Fine-tunes the same scratch classifier (a `gpt` backbone) on SST-2 (the test fixture) on 1
device and on 4 devices (data parallel: `devices = 4`), and a scratch `bert` on 1 device and on
data 2 x model 2 (`model_parallel = 2`); returns the per-step losses, weight differences and the
compiled step's shardings. tests/test_distribute.py makes the assertions.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

import lmkit.evaluation.evaluator as evaluation_api  # noqa: E402
import lmkit.evaluation.finetune as finetune  # noqa: E402
from lmkit.evaluation import evaluate  # noqa: E402

GLUE = Path(__file__).resolve().parent / "fixtures" / "eval" / "glue"
# texts cut to 4 tokens: every batch pads to one width, so each mesh compiles its step once;
# packing off: a mesh of several devices pads (lmkit.data.packing packs on one device only), and
# the one-device run must batch as the mesh does for their losses to be compared
TINY: dict[str, Any] = {"packing": False, "embed_dim": 16, "units": 16, "vocab_size": 400, "max_length": 4,
                        "batch_size": 16, "eval_batch_size": 64, "log_every": 5, "max_steps": 20,
                        "max_train_examples": 160, "max_eval_examples": 32}

made: list[Any] = []


class Recording(finetune.FinetuneTrainee):
    """The fine-tuning trainee, keeping itself and every step's loss for the checks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.losses: list[float] = []
        made.append(self)

    def train(self, step: int, k: int) -> np.ndarray:
        losses = super().train(step, k)
        self.losses += [float(x) for x in losses]
        return losses


finetune.FinetuneTrainee = Recording  # finetune() builds its trainee through this name


class Unscored:
    """The result without scoring the dev split, which runs on one device after training (its
    compilations and the `evaluate` import take seconds; the weights are compared instead)."""

    @staticmethod
    def build(*args: Any, training: dict[str, Any], model: Any, **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(training=training, model=model)


evaluation_api.EvalResult = Unscored  # evaluate() builds its result through this name
finetune.predict = lambda model, data, *args: np.zeros((len(data), 2), np.float32)


def run(**options: Any) -> tuple[Any, Recording]:
    result = evaluate("scratch", task="glue/sst2", data=GLUE, **{**TINY, **options})
    return result, made[-1]


def weights(result: Any) -> list[np.ndarray]:
    return [np.asarray(v) for v in result.model.weights]


def compare(one: tuple[Any, Recording], many: tuple[Any, Recording]) -> dict[str, Any]:
    (r1, t1), (rn, tn) = one, many
    compiled = tn.step.lower(*tn._stacked([0])).compile()
    shardings = compiled.input_shardings[0]  # (state, inputs, labels, masks, active)
    return {
        "one_layout": t1.layout is not None,
        "mesh": tn.layout.describe(),
        "summary_mesh": rn.training.get("mesh"),
        "first_loss": t1.losses[0], "last_loss": t1.losses[-1], "steps": len(tn.losses),
        "loss_diff": float(np.abs(np.array(t1.losses) - np.array(tn.losses)).max()),
        "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(weights(r1), weights(rn))),
        "tokens_spec": str(shardings[1][0].spec), "labels_spec": str(shardings[2].spec),
        "state_specs": sorted({str(s.spec) for s in shardings[0][0]}),
    }


GPT = {"arch": "gpt", "heads": 2, "layers": 1}


def results() -> dict[str, Any]:
    result: dict[str, Any] = {}
    one = run(devices=1, **GPT)
    result["data"] = compare(one, run(devices=4, **GPT))
    result["data"]["losses_one"] = one[1].losses  # what 2 processes must reproduce (`processes`)
    # model parallel fine-tuning, on the pretrained transformers' `bert` (gpt's split is checked
    # in LM training by tests/distribute_child.py; the fine-tuning step is the same for both)
    bert = {"arch": "bert", "heads": 2, "layers": 1, "max_steps": 10, "max_train_examples": 64}
    split = run(devices=4, model_parallel=2, **bert)
    result["bert"] = compare(run(devices=1, **bert), split)
    trainee = split[1]
    names = [v.path for v in trainee.model.trainable_variables]
    for name in ("w_qkv", "w_out"):
        state = trainee.state[0][next(i for i, n in enumerate(names) if n.endswith(f"/layer_0/{name}"))]
        result["bert"][name] = str(state.sharding.spec)
        result["bert"][f"{name}_shard"] = list(state.addressable_shards[0].data.shape)
    return result


def processes(out: Path) -> None:
    """One of 2 processes (``LMKIT_COORDINATOR`` ... set by the test): fine-tune `GPT` on one
    device each (data 2, across the processes) with a checkpoint folder; process 0 writes `out`."""
    import jax

    result, trainee = run(devices=1, checkpoint_dir=out.parent / "finetuned", **GPT)
    if jax.process_index() == 0:
        out.write_text(json.dumps({"losses": trainee.losses, "mesh": result.training["mesh"],
                                   "local_rows": str(trainee.layout.local_rows(TINY["batch_size"]))}))


if __name__ == "__main__":
    if os.environ.get("LMKIT_COORDINATOR"):
        processes(Path(sys.argv[1]))
    else:
        Path(sys.argv[1]).write_text(json.dumps(results()))
