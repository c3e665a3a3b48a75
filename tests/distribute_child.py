"""Data parallel checks that need several devices, run as its own process:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/distribute_child.py OUT

(the device count is fixed when JAX starts, so tests/test_distribute.py starts this process).
It also runs the fine-tuning checks of tests/distribute_finetune_child.py.
Writes what it measured to OUT as JSON; the test makes the assertions.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from lmkit.build import build_model  # noqa: E402
from lmkit.config import TrainConfig  # noqa: E402
from lmkit.distribute import layout_for, state_shardings  # noqa: E402
from lmkit.errors import ConfigError  # noqa: E402
from lmkit.models.bert import BERT  # noqa: E402
from lmkit.resolve import resolve  # noqa: E402
from lmkit.training.step import JaxStepper  # noqa: E402

VOCAB, STEPS, K = 11, 20, 10


def stepper(arch: str, devices: object, batch_size: int = 8, accumulate: int = 1,
            model_parallel: int = 1, heads: int = 2, precision: str = "float32") -> JaxStepper:
    cfg = TrainConfig(arch=arch, embed_dim=16, units=16, layers=1, heads=heads, seq_len=8,
                      batch_size=batch_size, dropout=0.0, warmup_steps=2, learning_rate=1e-2,
                      precision=precision)
    parts = resolve(cfg)
    keras.utils.set_random_seed(0)  # the same initial weights for every stepper
    model = build_model(cfg, VOCAB, parts.arch.obj)
    optimizer = parts.optimizer.obj(cfg, parts.schedule.obj(cfg, STEPS))
    return JaxStepper(model, optimizer, parts.loss.obj(cfg), ["loss"], 5,
                      layout=layout_for(devices, batch_size, model_parallel), accumulate=accumulate)


def run(s: JaxStepper, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.concatenate([s.train(xs[i:i + K], ys[i:i + K]) for i in range(0, STEPS, K)])


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(p - q).max()) for p, q in zip(a, b))


def main(out: Path) -> None:
    import jax

    rng = np.random.default_rng(0)
    xs = rng.integers(0, VOCAB, (STEPS, 8, 8)).astype(np.int32)
    ys = (xs + 1) % VOCAB  # learnable: the loss falls
    result: dict[str, object] = {"devices": len(jax.devices())}
    result_losses, result_weights = {}, {}
    for arch in ("gpt", "lstm"):
        one, four = stepper(arch, 1), stepper(arch, "all")
        losses_one, losses_four = run(one, xs, ys), run(four, xs, ys)
        result_losses[arch], result_weights[arch] = losses_one, one.model_arrays()
        compiled = four.step.lower(xs[:K], ys[:K]).compile()
        result[arch] = {
            "layout_one": one.layout is not None,
            "mesh": four.layout.describe(),
            "loss_diff": float(np.abs(losses_one - losses_four).max()),
            "weight_diff": max_diff(one.model_arrays(), four.model_arrays()),
            "first_loss": float(losses_one[0]), "last_loss": float(losses_one[-1]),
            "x_spec": str(compiled.input_shardings[0][1].spec),
            "weight_specs": sorted({str(s.spec) for s in jax.tree.leaves(compiled.input_shardings[0][0])}),
        }
    # data 2 x model 2: gpt's large matrices split over the model axis, with their Adam slots;
    # and 2 micro-batches of 4 rows accumulated: all the same as one batch of 8 on one device
    split = stepper("gpt", "all", batch_size=4, accumulate=2, model_parallel=2)
    losses_split = run(split, *(a.reshape(STEPS, 2, 4, 8) for a in (xs, ys)))
    # paths carry Keras's numbered model names (gpt_3/...): look them up by their ends
    def find(variables: list, end: str) -> int:
        return next(i for i, v in enumerate(variables) if v.path.endswith(end))

    names, slots = split.model.trainable_variables, split.optimizer.variables
    result["model_parallel"] = {
        "mesh": split.layout.describe(),
        "loss_diff": float(np.abs(result_losses["gpt"] - losses_split).max()),
        "weight_diff": max_diff(result_weights["gpt"], split.model_arrays()),
        "w_fc": str(split.state[0][find(names, "/block_0/w_fc")].sharding.spec),
        "w_out": str(split.state[0][find(names, "/block_0/w_out")].sharding.spec),
        "w_fc_slot": str(split.state[2][find(slots, "_block_0_w_fc_momentum")].sharding.spec),
        "w_fc_shard_shape": list(split.state[0][find(names, "/block_0/w_fc")]
                                 .addressable_shards[0].data.shape),
        "embedding": str(split.state[0][find(names, "/embedding")].sharding.spec),
    }
    # mixed_bfloat16 in the data parallel step: computes in bfloat16, keeps float32 weights and
    # slots (what checkpoints hold); the same as one device up to bfloat16's rounding
    bf_one, bf_four = (stepper("gpt", d, precision="mixed_bfloat16") for d in (1, "all"))
    bf_losses_one, bf_losses_four = run(bf_one, xs, ys), run(bf_four, xs, ys)
    keras.config.set_dtype_policy("float32")
    result["bf16"] = {
        "compute": bf_four.model.dtype_policy.compute_dtype,
        "mesh": bf_four.layout.describe(),
        "first_loss": float(bf_losses_four[0]), "last_loss": float(bf_losses_four[-1]),
        "loss_diff": float(np.abs(bf_losses_one - bf_losses_four).max()),
        "loss_diff_float32": float(np.abs(result_losses["gpt"] - bf_losses_four).max()),
        "dtypes": sorted({str(a.dtype) for a in (*bf_four.model_arrays(), *bf_four.optimizer_arrays())
                          if not np.issubdtype(a.dtype, np.integer)}),  # not step counters, seeds
    }
    for name, call in (("heads", lambda: stepper("gpt", "all", model_parallel=4, heads=2)),
                       ("lstm", lambda: stepper("lstm", "all", model_parallel=2)),
                       ("devices", lambda: layout_for("all", 8, model_parallel=3))):
        try:
            call()
            result[f"mp_{name}"] = ""
        except ConfigError as exc:
            result[f"mp_{name}"] = str(exc)
    try:  # bert's MLP width must split too (its heads do)
        encoder = BERT(VOCAB, embed_dim=16, layers=1, heads=4, ffn_dim=30, seq_len=8)
        encoder(keras.Input(shape=(8,), batch_size=1, dtype="int32"))
        state_shardings(layout_for("all", 8, model_parallel=4), encoder)
        result["mp_bert_ffn"] = ""
    except ConfigError as exc:
        result["mp_bert_ffn"] = str(exc)
    try:
        layout_for("all", batch_size=10)
        result["indivisible"] = ""
    except ConfigError as exc:
        result["indivisible"] = str(exc)
    # fine-tuning's step on the same mesh (in this process: JAX starts and compiles once)
    import distribute_finetune_child

    result["finetune"] = distribute_finetune_child.results()
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
