"""Built-in optimizers: factories from a `TrainConfig` to a Keras optimizer.

Each factory takes the config and the learning rate (a float or a schedule) and returns a
`keras.optimizers.Optimizer`. Gradient clipping by global norm (`clipnorm`) and weight decay
(`weight_decay`) apply to all of them through Keras's own optimizer arguments, so they work
identically in the compiled JAX step and in `model.fit` on other backends.

`gd` is full-batch gradient descent: its registry entry has the capability ``"full_batch"``, so
the trainer accumulates the gradient over the whole training split and takes one plain SGD step
per pass (see `lmkit.training.language_model`).

`schedule_free_adamw` trains at one point and is judged at another: its entry has the capability
``"evaluation_weights"``, and its optimizer implements `EvaluationWeights` (the averaged weights
for evaluation, checkpoints, the saved model and samples; the gradient point back from them on
resume), which the compiled stepper uses (`lmkit.training.step`).

Third-party optimizers register the same way or through the `lmkit.optimizers` entry point group::

    @optimizers.register("my_opt", description="...")
    def my_opt(cfg, learning_rate):
        return keras.optimizers.SGD(learning_rate)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import warnings
from collections.abc import Sequence
from typing import Protocol

import keras
from keras import ops

from lmkit.errors import LmkitWarning
from lmkit.registry import optimizers

if TYPE_CHECKING:
    from lmkit.config import TrainConfig

__all__ = ["build_optimizer", "exclude_from_decay", "without_schedule", "FULL_BATCH",
           "ROW_UPDATES", "SCHEDULE_FREE", "EVALUATION_WEIGHTS",
           "EvaluationWeights", "ScheduleFreeAdamW"]

#: capability of an optimizer entry that takes one step per pass over the training split
FULL_BATCH = "full_batch"
#: capability of an element-wise optimizer: each weight's update depends only on its own gradient
#: and slots, so fine-tuning may update only the embedding rows a batch reads (lazily: the other
#: rows keep their weights and slots, as PyTorch's SparseAdam)
ROW_UPDATES = "row_updates"
#: capability of an optimizer entry that makes its own learning rate (a warm-up, then constant):
#: the config's decay schedule is not used (`without_schedule`)
SCHEDULE_FREE = "schedule_free"
#: capability of an optimizer entry whose optimizers implement `EvaluationWeights`: the weights
#: to evaluate, save and sample are not the ones gradients are taken at
EVALUATION_WEIGHTS = "evaluation_weights"


class EvaluationWeights(Protocol):
    """What an optimizer of an ``"evaluation_weights"`` entry provides, on arrays (pure
    functions of the values of the model's trainable variables and of `optimizer.variables`, in
    their orders, so they run inside a compiled step as well as on host copies)."""

    def evaluation_weights(self, trainable: Sequence[Any], slots: Sequence[Any]) -> list[Any]:
        """The weights to evaluate, checkpoint, save and sample with."""

    def training_weights(self, weights: Sequence[Any], slots: Sequence[Any]) -> list[Any]:
        """The trainable values to take the next gradient at, from `evaluation_weights`'s
        weights and the slots (to resume from a checkpoint)."""


def _common(cfg: "TrainConfig") -> dict[str, Any]:
    common: dict[str, Any] = {}
    if cfg.clipnorm is not None:
        common["global_clipnorm"] = cfg.clipnorm
    return common


def _decay(cfg: "TrainConfig") -> dict[str, Any]:
    return {"weight_decay": cfg.weight_decay} if cfg.weight_decay > 0 else {}


@optimizers.register("gd", aliases=("full_batch", "batch_gd"), capabilities=(FULL_BATCH,),
                     description="Full-batch gradient descent: one step per pass over the training split.")
def gd(cfg: "TrainConfig", learning_rate: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(learning_rate, **_decay(cfg), **_common(cfg))


@optimizers.register("sgd", capabilities=(ROW_UPDATES,), description="Mini-batch stochastic gradient descent.")
def sgd(cfg: "TrainConfig", learning_rate: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(learning_rate, **_decay(cfg), **_common(cfg))


@optimizers.register("momentum", aliases=("sgdm",), capabilities=(ROW_UPDATES,), description="SGD with heavy-ball momentum.")
def momentum(cfg: "TrainConfig", learning_rate: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(learning_rate, momentum=cfg.momentum, **_decay(cfg), **_common(cfg))


@optimizers.register("nesterov", capabilities=(ROW_UPDATES,), description="SGD with Nesterov momentum.")
def nesterov(cfg: "TrainConfig", learning_rate: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(
        learning_rate, momentum=cfg.momentum, nesterov=True, **_decay(cfg), **_common(cfg)
    )


@optimizers.register("adam", capabilities=(ROW_UPDATES,), description="Adam (Kingma & Ba, 2015).")
def adam(cfg: "TrainConfig", learning_rate: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(
        learning_rate, beta_1=cfg.beta1, beta_2=cfg.beta2, **_decay(cfg), **_common(cfg)
    )


@optimizers.register("adamw", capabilities=(ROW_UPDATES,), description="Adam with decoupled weight decay (Loshchilov & Hutter, 2019).")
def adamw(cfg: "TrainConfig", learning_rate: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.AdamW(
        learning_rate, weight_decay=cfg.weight_decay, beta_1=cfg.beta1, beta_2=cfg.beta2,
        **_common(cfg),
    )


@optimizers.register("rmsprop", description="RMSprop (Hinton, 2012).")
def rmsprop(cfg: "TrainConfig", learning_rate: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.RMSprop(learning_rate, rho=0.9, **_decay(cfg), **_common(cfg))


@optimizers.register("adagrad", description="Adagrad (Duchi et al., 2011).")
def adagrad(cfg: "TrainConfig", learning_rate: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adagrad(learning_rate, **_decay(cfg), **_common(cfg))


@optimizers.register("lion", capabilities=(ROW_UPDATES,), description="Lion, sign-based momentum (Chen et al., 2023).")
def lion(cfg: "TrainConfig", learning_rate: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.Lion(
        learning_rate, beta_1=cfg.beta1, beta_2=cfg.beta2, **_decay(cfg), **_common(cfg)
    )


#: Newton–Schulz momentum of `muon` (the Muon paper's and modded-nanoGPT's value)
MUON_MOMENTUM = 0.95


@optimizers.register(
    "muon", description="Muon: Newton–Schulz orthogonalised momentum for 2-D weights, AdamW for "
                        "the rest (embeddings, untied head, biases, norms).")
def muon(cfg: "TrainConfig", learning_rate: Any) -> keras.optimizers.Optimizer:
    """Keras's `Muon` (Jordan et al., 2024), with Moonlight's update scale (each orthogonalised
    update times ``0.2 * sqrt(max(rows, cols))``) so that it takes AdamW's learning rate and
    weight decay. Matrices whose path names an embedding or the untied head (``head_kernel``) get
    AdamW with `beta1`, `beta2`, as in the modded-nanoGPT speedrun; Nesterov momentum 0.95, five
    Newton–Schulz steps."""
    return keras.optimizers.Muon(
        learning_rate, adam_beta_1=cfg.beta1, adam_beta_2=cfg.beta2,
        weight_decay=cfg.weight_decay, adam_weight_decay=cfg.weight_decay,
        exclude_layers=["head_kernel"], momentum=MUON_MOMENTUM, **_common(cfg),
    )


@keras.saving.register_keras_serializable(package="lmkit")
class ScheduleFreeAdamW(keras.optimizers.Optimizer):
    """Schedule-Free AdamW (Defazio et al., 2024, "The Road Less Scheduled"), as
    ``optax.contrib.schedule_free_adamw`` computes it.

    Three sequences per weight: `z` takes AdamW steps without momentum (second moment `v`,
    bias-corrected; decoupled weight decay taken at the gradient point), `x` is their running
    average weighted by the squared (largest so far) learning rate, and the model's variable holds
    ``y = beta_1 * x + (1 - beta_1) * z``, where the gradient is taken. `x` is what should be
    evaluated and kept (`evaluation_weights`); it is stored as a slot, so it is exact. No schedule:
    `learning_rate` should only warm up (a constant rate after it).

    >>> opt = ScheduleFreeAdamW(learning_rate=2.5e-3, beta_1=0.9)   # doctest: +SKIP
    """

    def __init__(self, learning_rate: Any = 0.0025, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, weight_lr_power: float = 2.0, name: str = "schedule_free_adamw",
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, name=name, **kwargs)
        if not 0.0 < beta_1 <= 1.0:  # x is recovered from y and z by dividing by beta_1
            raise ValueError(f"`beta_1` of schedule-free AdamW must be in (0, 1], got {beta_1}")
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.weight_lr_power = weight_lr_power

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._z, self._x, self._v = [], [], []
        for var in var_list:
            z = self.add_variable_from_reference(var, "z")
            x = self.add_variable_from_reference(var, "x")
            # copies: the compiled step donates every state buffer, each must be its own
            z.assign(ops.copy(var))
            x.assign(ops.copy(var))
            self._z.append(z)
            self._x.append(x)
            self._v.append(self.add_variable_from_reference(var, "v"))
        # the running sum of averaging weights and the largest learning rate so far
        self._weight_sum = self.add_variable((), initializer="zeros", name="weight_sum")
        self._max_lr = self.add_variable((), initializer="zeros", name="max_lr")

    def _apply_weight_decay(self, variables: Any) -> None:
        """Decay enters the `z` step (`update_step`), not the variable (y) as Keras would."""

    def _backend_update_step(self, grads: Any, trainable_variables: Any, learning_rate: Any) -> None:
        lr = ops.cast(learning_rate, "float32")
        max_lr = ops.maximum(self._max_lr, lr)
        weight = max_lr ** self.weight_lr_power
        total = self._weight_sum + weight
        average = ops.where(total > 0, weight / ops.maximum(total, 1e-38), 0.0)  # c_{t+1}
        self._max_lr.assign(max_lr)
        self._weight_sum.assign(total)
        for grad, var in zip(grads, trainable_variables):
            self._step(grad, var, lr, average)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        raise NotImplementedError("ScheduleFreeAdamW updates all variables together "
                                  "(_backend_update_step), with their shared averaging weight")

    def _step(self, grad: Any, var: Any, lr: Any, average: Any) -> None:
        i = self._get_variable_index(var)
        z, x, v = self._z[i], self._x[i], self._v[i]
        dtype = var.dtype
        lr, average = ops.cast(lr, dtype), ops.cast(average, dtype)
        grad = ops.cast(grad, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        v_new = self.beta_2 * v + (1.0 - self.beta_2) * ops.square(grad)
        update = grad / (ops.sqrt(v_new / (1.0 - ops.power(self.beta_2, t))) + self.epsilon)
        if self.weight_decay and self._use_weight_decay(var):
            update = update + self.weight_decay * var
        z_new = z - lr * update
        x_new = (1.0 - average) * x + average * z_new
        v.assign(v_new)
        z.assign(z_new)
        x.assign(x_new)
        var.assign(self.beta_1 * x_new + (1.0 - self.beta_1) * z_new)

    def _slot_positions(self, slots: list[Any]) -> dict[int, int]:
        return {id(v): i for i, v in enumerate(slots)}

    def evaluation_weights(self, trainable: Sequence[Any], slots: Sequence[Any]) -> list[Any]:
        """The averaged weights `x` (from the slots; `trainable` holds `y`)."""
        where = self._slot_positions(self.variables)
        return [slots[where[id(x)]] for x in self._x]

    def training_weights(self, weights: Sequence[Any], slots: Sequence[Any]) -> list[Any]:
        """``y = beta_1 * x + (1 - beta_1) * z``, the point the step after a resume starts at."""
        where = self._slot_positions(self.variables)
        return [self.beta_1 * slots[where[id(x)]] + (1.0 - self.beta_1) * slots[where[id(z)]]
                for x, z in zip(self._x, self._z)]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "weight_lr_power": self.weight_lr_power}


@optimizers.register(
    "schedule_free_adamw", aliases=("sf_adamw",), capabilities=(EVALUATION_WEIGHTS, SCHEDULE_FREE),
    description="Schedule-Free AdamW: no decay schedule; evaluates and saves averaged weights.")
def schedule_free_adamw(cfg: "TrainConfig", learning_rate: Any) -> keras.optimizers.Optimizer:
    """`ScheduleFreeAdamW` with `beta1`, `beta2`, `weight_decay` and a linear warm-up of
    `warmup_steps` to `learning_rate`, then constant: the `learning_rate` schedule it is given is
    not used (averaging replaces the decay; the entry's capability ``"schedule_free"`` makes
    training record ``schedule = "constant"``, `without_schedule`)."""
    from lmkit.schedules import WarmupDecay

    warmup = cfg.warmup_steps or 0
    rate = WarmupDecay(cfg.learning_rate, max(warmup, 1), warmup, "constant")
    return ScheduleFreeAdamW(rate, beta_1=cfg.beta1, beta_2=cfg.beta2,
                             weight_decay=cfg.weight_decay or None, **_common(cfg))


def build_optimizer(cfg: Any, learning_rate: Any) -> keras.optimizers.Optimizer:
    """The optimizer named by `cfg.optimizer`, with clipping and weight decay applied.

    `cfg` is any config with the optimizer keys of `TrainConfig` (`lmkit.evaluation.EvalConfig`
    has the same ones).
    """
    return optimizers.get(cfg.optimizer)(cfg, learning_rate)


def without_schedule(cfg: "TrainConfig", entry: Any) -> "TrainConfig":
    """`cfg` with ``schedule = "constant"`` when the optimizer `entry` makes its own learning rate
    (capability ``"schedule_free"``), so the run's saved config says what was trained; a warning
    when the user had asked for another schedule. Otherwise `cfg` unchanged.

    >>> from lmkit.config import TrainConfig
    >>> cfg = TrainConfig(optimizer="schedule_free_adamw")
    >>> without_schedule(cfg, optimizers.entry(cfg.optimizer)).schedule
    'constant'
    """
    if not entry.has(SCHEDULE_FREE) or cfg.schedule == "constant":
        return cfg
    if "schedule" in cfg.given:
        warnings.warn(f"schedule={cfg.schedule!r} is not used by optimizer={cfg.optimizer!r}: it "
                      f"warms up over warmup_steps ({cfg.warmup_steps or 0}) and then keeps "
                      f"learning_rate constant (averaging replaces the decay); set "
                      f"schedule = \"constant\" to silence this", LmkitWarning, stacklevel=2)
    return cfg.replace(schedule="constant")


def exclude_from_decay(optimizer: keras.optimizers.Optimizer, variables: list[Any]) -> None:
    """Decay only matrices, as GPT-2 and nanoGPT do: biases and norm scales (1-D) keep their size.

    By shape rather than by name, so it holds for every architecture and plugin.
    """
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) < 2])
