"""Fine-tuning on a mesh of forced host devices, run as its own process:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/distribute_finetune_child.py OUT

Fine-tunes the same scratch classifier (a `gpt` backbone) on SST-2 (the test fixture) on 1
device, on 4 devices (data parallel: `devices = 4`) and on data 2 x model 2
(`model_parallel = 2`); writes the per-step losses, weight differences and the compiled step's
shardings to OUT as JSON. tests/test_distribute.py makes the assertions.
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

import lmkit.evaluation.api as evaluation_api  # noqa: E402
import lmkit.evaluation.finetune as finetune  # noqa: E402
from lmkit.evaluation import evaluate  # noqa: E402

GLUE = Path(__file__).resolve().parent / "fixtures" / "eval" / "glue"
TINY: dict[str, Any] = {"embed_dim": 16, "units": 16, "vocab_size": 400, "max_length": 16,
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


class Outputs:
    """The classifier's outputs on the scored split, unscored: scoring imports `evaluate`
    (seconds), and the logits say more than the metric."""

    @staticmethod
    def build(task: Any, split: str, name: str, outputs: np.ndarray, labels: np.ndarray, *args: Any,
              training: dict[str, Any], model: Any, **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(predictions=outputs, training=training, model=model)


evaluation_api.EvalResult = Outputs  # evaluate() builds its result through this name


def run(**options: Any) -> tuple[Any, Recording]:
    result = evaluate("scratch", task="glue/sst2", data=GLUE, **{**TINY, **options})
    return result, made[-1]


def weights(result: Any) -> list[np.ndarray]:
    return [np.asarray(v) for v in result.model.weights]


def compare(one: tuple[Any, Recording], many: tuple[Any, Recording]) -> dict[str, Any]:
    (r1, t1), (rn, tn) = one, many
    inputs, labels = tn._batch(0)
    compiled = tn._step_fn.lower(tn.state, tn._masks(0), inputs, labels).compile()
    shardings = compiled.input_shardings[0]
    return {
        "one_layout": t1.layout is not None,
        "mesh": tn.layout.describe(),
        "summary_mesh": rn.training.get("mesh"),
        "first_loss": t1.losses[0], "last_loss": t1.losses[-1], "steps": len(tn.losses),
        "loss_diff": float(np.abs(np.array(t1.losses) - np.array(tn.losses)).max()),
        "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(weights(r1), weights(rn))),
        "output_diff": float(np.abs(r1.predictions - rn.predictions).max()),
        "tokens_spec": str(shardings[2][0].spec), "labels_spec": str(shardings[3].spec),
        "state_specs": sorted({str(s.spec) for s in shardings[0][0]}),
    }


def main(out: Path) -> None:
    import jax

    result: dict[str, Any] = {"devices": len(jax.devices())}
    gpt = {"arch": "gpt", "heads": 2, "layers": 1}
    one = run(devices=1, **gpt)
    result["data"] = compare(one, run(devices=4, **gpt))
    split = run(devices=4, model_parallel=2, **gpt)
    result["model"] = compare(one, split)
    trainee = split[1]
    names = [v.path for v in trainee.model.trainable_variables]
    w_fc = next(i for i, n in enumerate(names) if n.endswith("/block_0/w_fc"))
    result["model"]["w_fc"] = str(trainee.state[0][w_fc].sharding.spec)
    result["model"]["w_fc_shard"] = list(trainee.state[0][w_fc].addressable_shards[0].data.shape)
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
