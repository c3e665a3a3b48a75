"""The keys training and fine-tuning share, declared once with their doc and checks.

`TrainConfig` and `EvalConfig` are composed from these sections; a config with other defaults
for some of their keys says so with `lmkit.config.core.own_defaults` (the defaults here are
training's). One key per line, so that adding one is a one-line change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmkit.config.core import ConfigBase, config_key
from lmkit.errors import ConfigError, did_you_mean

__all__ = ["PRECISIONS", "ModelShape", "Optimization", "Adapter", "Budget", "Devices", "Tracking",
           "SECTIONS", "TRACKERS", "check_budget", "check_tracking", "missing_library"]


@dataclass
class ModelShape(ConfigBase):
    """The model built from random weights and its tokenizer."""

    arch: str = config_key("gpt", "Architecture name (`lmkit list architectures`).")
    tokenizer: str = config_key("char", "Tokenizer name (`char`, `word`, `whitespace`, `bpe`, `byte`).")
    vocab_size: int | None = config_key(None, "Vocabulary size of a fitted tokenizer: `word` and `whitespace` (default 10000), `bpe` (default 2000).", min=2)
    embed_dim: int = config_key(128, "Embedding width.", min=1)
    units: int = config_key(128, "Hidden units of recurrent layers (and gated-CNN channels).", min=1)
    layers: int = config_key(4, "Number of stacked layers / blocks.", min=1)
    heads: int = config_key(4, "Attention heads (`gpt`).", min=1)


@dataclass
class Optimization(ConfigBase):
    """The optimizer, its schedule and the loss, from the registries of the same names."""

    optimizer: str = config_key("adamw", "Optimizer name (`lmkit list optimizers`); fine-tuning gives the head and the backbone one each.")
    learning_rate: float | str = config_key(1e-3, "Peak learning rate (fine-tuning: of the head); `\"find\"` (training) runs the learning-rate finder first and trains at its suggestion (`lmkit lr-find`).", min=0.0, exclusive_min=True)
    weight_decay: float = config_key(0.0, "Decoupled weight decay (AdamW, Lion) or L2 decay (others).", min=0.0)
    momentum: float = config_key(0.9, "Momentum of `momentum` and `nesterov`.", min=0.0, max=1.0, exclusive_max=True)
    beta1: float = config_key(0.9, "First-moment decay of Adam-family and Lion.", min=0.0, max=1.0, exclusive_max=True)
    beta2: float = config_key(0.99, "Second-moment decay of Adam-family and Lion.", min=0.0, max=1.0, exclusive_max=True)
    clipnorm: float | None = config_key(1.0, "Clip gradients to this global norm (`none` to disable).", min=0.0, exclusive_min=True)
    schedule: str = config_key("warmup_cosine", "Learning-rate schedule (`lmkit list schedules`).")
    warmup_steps: int | None = config_key(100, "Linear warm-up steps of the schedule (`none`: 6 % of the steps).", min=0)
    min_lr_ratio: float = config_key(0.1, "Final learning rate as a fraction of the peak.", min=0.0, max=1.0)
    loss: str | None = config_key("cross_entropy", "Loss name (`lmkit list losses`; `none`: the job's own, `cross_entropy`, or `squared_error` for a regression task).")
    label_smoothing: float = config_key(0.0, "Label smoothing of the `label_smoothing` loss.", min=0.0, max=1.0)
    freeze: list[str] = config_key([], "Glob patterns of variable paths that do not train (no gradient, no optimizer slots, bit-identical), e.g. `[\"embedding\", \"block_0/*\"]`; JAX only.")


@dataclass
class Adapter(ConfigBase):
    """Low-rank adapters (LoRA): the base weights frozen, small matrices trained beside them."""

    adapter: str = config_key("none", "`lora`: train low-rank adapters on the `lora_targets` kernels and freeze every other weight of the model (a classifier's head still trains); `none`: train the weights themselves. JAX only.", choices=("none", "lora"))
    lora_rank: int = config_key(8, "Rank r of each adapter (A: in x r, B: r x out); at most the kernel's smaller side.", min=1)
    lora_alpha: float = config_key(16.0, "Adapter scale numerator: the kernel computes W + (lora_alpha / lora_rank) A B.", min=0.0, exclusive_min=True)
    lora_dropout: float = config_key(0.0, "Dropout on the adapters' input; only 0 for now (the adapters compute x W + s (x A) B with the same x as the kernel).", min=0.0, max=0.0)
    lora_targets: list[str] = config_key(["q", "v"], "Kernels that get adapters: Hugging Face module names or their last parts (`query`, `c_attn`, `attn.*`), lmkit variable paths (`block_0/w_qkv`), or `q`, `k`, `v`, `o` for the attention's projections.")


@dataclass
class Budget(ConfigBase):
    """How long training runs, in what batches, and its seed."""

    batch_size: int = config_key(12, "Sequences (fine-tuning: examples) per batch.", min=1)
    max_steps: int | None = config_key(2000, "Optimizer steps to train (set `none` and use `epochs` instead; fine-tuning: `0` scores the untrained head).", min=1)
    epochs: float | None = config_key(None, "Passes over the training data; overrides `max_steps` when set.", min=0.0, exclusive_min=True)
    checkpoint_every: int = config_key(500, "Write a checkpoint every N steps (and always at the end).", min=1)
    accumulate_steps: int = config_key(1, "Micro-batches of `batch_size` whose gradients are averaged into one optimizer step (an effective batch of `batch_size * accumulate_steps` in the memory of one batch).", min=1)
    batch_parts: int = config_key(0, "Compute each batch's gradient as this many independent equal parts, run side by side on a CPU, the same mathematics (`0`: automatic: the architecture's choice for long runs of small batches; fine-tuning: 1).", min=0)
    seed: int = config_key(0, "Seed of initialization, batches and dropout; equal seeds give equal runs.", min=0, max=2**32 - 1)


#: the `precision` values: Keras dtype policies lmkit's models are written for
PRECISIONS = ("float32", "mixed_bfloat16")


@dataclass
class Devices(ConfigBase):
    """Where the compiled step runs."""

    devices: int | list[int] | str = config_key("all", "Devices of each process the compiled step uses on JAX: `\"all\"`, a count, or a list of device ids. The batch is split over them (data parallel); `batch_size` stays the global batch and must divide evenly.", min=1)
    model_parallel: int = config_key(1, "Devices each weight of the model's large matrices is split over (`gpt`, `gpt2`, `bert`, `llama`: attention and MLP matrices); must divide `devices` and the model's widths.", min=1)
    precision: str = config_key("float32", "`float32`, or `mixed_bfloat16` (Keras's policy): weights, optimizer state, norms, softmax and loss in float32, activations and matmuls in bfloat16, each matmul summing in float32. On GPUs and on CPUs with bfloat16 units (Intel AMX: several times; AMD Zen 4's AVX-512 BF16: about 1.6x) the matmuls run faster.", choices=PRECISIONS)


@dataclass
class Tracking(ConfigBase):
    """Experiment trackers that receive the training's events (`lmkit.engine.tracking`)."""

    report: list[str] = config_key([], "Experiment trackers that also receive the training's events: `tensorboard` (event files in the run's `tensorboard/` folder), `mlflow` (params, metrics per step, the config, summary and model as artifacts). Needs `pip install 'lmkit[track]'`.")
    tracking_uri: str | None = config_key(None, "MLflow tracking URI, e.g. `sqlite:///mlflow.db` or a server's `http://host:5000` (`none`: `MLFLOW_TRACKING_URI`, else MLflow's default, `sqlite:///mlflow.db` in the working folder).")
    experiment: str = config_key("lmkit", "MLflow experiment the runs are logged under.")


#: every shared section, in the order a config lists them
SECTIONS = (ModelShape, Optimization, Adapter, Budget, Devices, Tracking)


def check_budget(cfg: Any) -> None:
    """Training needs a length (`max_steps` or `epochs`), and parts that divide its batch."""
    if cfg.max_steps is None and cfg.epochs is None:
        raise ConfigError("set either 'max_steps' or 'epochs' (both are none)")
    if cfg.batch_parts > 1 and cfg.batch_size % cfg.batch_parts:
        raise ConfigError(
            f"config key 'batch_parts' ({cfg.batch_parts}) must divide 'batch_size' "
            f"({cfg.batch_size}) into equal parts; use a divisor of {cfg.batch_size}")


#: the experiment trackers `report` may name (`lmkit.engine.tracking`)
TRACKERS = ("tensorboard", "mlflow")


def missing_library(package: str, feature: str) -> ConfigError:
    """The error for an optional library that is not installed: which extra installs it."""
    return ConfigError(f"{feature} needs the '{package}' package, which is not installed; install "
                       f"it with `pip install 'lmkit[track]'` (or `pip install {package}`)")


def check_tracking(cfg: Any) -> None:
    """`report` names known trackers whose library is installed: a typo or a missing library
    fails with the config, not after the data is read."""
    import importlib.util

    for tracker in cfg.report:
        if tracker not in TRACKERS:
            raise ConfigError(f"config key 'report' names {tracker!r}, which is no tracker"
                              f"{did_you_mean(tracker, TRACKERS)}; choose from "
                              f"{', '.join(TRACKERS)}")
        try:  # found, not imported: a config stays cheap to build
            found = importlib.util.find_spec(tracker) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise missing_library(tracker, f"report = [{tracker!r}]")
