"""Built-in optimizers: factories from a `TrainConfig` to a Keras optimizer.

Each factory takes the config and the learning rate (a float or a schedule) and returns a
`keras.optimizers.Optimizer`. Gradient clipping by global norm (`clipnorm`) and weight decay
(`weight_decay`) apply to all of them through Keras's own optimizer arguments, so they work
identically in the compiled JAX step and in `model.fit` on other backends.

`gd` is full-batch gradient descent: its registry entry has the capability ``"full_batch"``, so
the trainer accumulates the gradient over the whole training split and takes one plain SGD step
per pass (see `lmkit.training.language_model`).

Third-party optimizers register the same way or through the `lmkit.optimizers` entry point group::

    @optimizers.register("my_opt", description="...")
    def my_opt(cfg, learning_rate):
        return keras.optimizers.SGD(learning_rate)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras

from lmkit.registry import optimizers

if TYPE_CHECKING:
    from lmkit.config import TrainConfig

__all__ = ["build_optimizer", "exclude_from_decay", "FULL_BATCH", "ROW_UPDATES"]

#: capability of an optimizer entry that takes one step per pass over the training split
FULL_BATCH = "full_batch"
#: capability of an element-wise optimizer: each weight's update depends only on its own gradient
#: and slots, so fine-tuning may update only the embedding rows a batch reads (lazily: the other
#: rows keep their weights and slots, as PyTorch's SparseAdam)
ROW_UPDATES = "row_updates"


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


def build_optimizer(cfg: Any, learning_rate: Any) -> keras.optimizers.Optimizer:
    """The optimizer named by `cfg.optimizer`, with clipping and weight decay applied.

    `cfg` is any config with the optimizer keys of `TrainConfig` (`lmkit.evaluation.EvalConfig`
    has the same ones).
    """
    return optimizers.get(cfg.optimizer)(cfg, learning_rate)


def exclude_from_decay(optimizer: keras.optimizers.Optimizer, variables: list[Any]) -> None:
    """Decay only matrices, as GPT-2 and nanoGPT do: biases and norm scales (1-D) keep their size.

    By shape rather than by name, so it holds for every architecture and plugin.
    """
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) < 2])
