"""lmkit models as an lm-evaluation-harness model (``lmkit``): the harness's tasks for lmkit runs.

The harness asks a model three kinds of requests; `LmkitLM` serves them on lmkit's compiled
forward (`lmkit.forward`), the same code as lmkit's own zero-shot scoring:

* ``loglikelihood(context, continuation)``: the continuation's summed log-probability
  (`lmkit.evaluation.zeroshot.loglikelihoods`: context and continuation encoded apart and
  joined, the context cut from the left to the model's window) and whether greedy decoding
  would produce it (`greedy_loglikelihoods`, in the same pass);
* ``loglikelihood_rolling(text)``: the text's summed log-probability over windows of the
  model's context (`lmkit.forward.text_nll`); lmkit tokenizers have no start-of-text token, so
  each window's first token is context, not scored;
* ``generate_until(context, {until, max_gen_toks, temperature})``: `lmkit.generation.generate`,
  cut at the first stop string.

The harness finds models by name in its registry; it has no plugin entry points, so importing
this module registers ``lmkit``, and ``python -m lmkit.evaluation.harness`` is the harness's
own command line with it registered::

    python -m lmkit.evaluation.harness --model lmkit --model_args run=runs/char-gpt \\
        --tasks my_copa --include_path my_tasks/

>>> import lm_eval                                                           # doctest: +SKIP
>>> from lmkit.evaluation.harness import LmkitLM                             # doctest: +SKIP
>>> lm_eval.simple_evaluate(model=LmkitLM(run="runs/char-gpt"), tasks=["my_copa"],
...                         task_manager=lm_eval.tasks.TaskManager(include_path="my_tasks/"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from lmkit.errors import ConfigError

__all__ = ["LmkitLM", "main"]


@register_model("lmkit")
class LmkitLM(LM):
    """A `Run`, a run directory or a pretrained decoder (a checkpoint folder or registered
    name) as a harness model. `run` is what ``--model_args run=DIR`` names; `model` and
    `tokenizer` give objects directly (a `Run`'s, or any lmkit language model's)."""

    def __init__(self, run: Any = None, model: Any = None, tokenizer: Any = None, batch_size: Any = 64,
                 max_length: int | str | None = None, **ignored: Any) -> None:
        super().__init__()
        if model is None:
            if run is None:
                raise ConfigError("the lmkit harness model needs run=DIR (a run directory or a "
                                  "pretrained decoder), or model= and tokenizer= objects")
            from lmkit.evaluation.evaluator import open_scored

            opened = open_scored(run)
            if getattr(opened, "is_encoder", False):
                raise ConfigError(f"lm-eval scores continuations with a causal language model; {run} is an "
                                  f"encoder (BERT-family) with no next-token distribution: give a decoder")
            model, tokenizer = opened.model, opened.tokenizer
        if tokenizer is None:
            raise ConfigError("LmkitLM(model=...) needs the model's tokenizer= as well")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 64  # "auto" is the harness's own
        self.window = int(max_length or getattr(model, "max_context", None) or 256)

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        from lmkit.evaluation.zeroshot import greedy_loglikelihoods

        pairs = [tuple(r.args[:2]) for r in requests]
        ll, _, greedy = greedy_loglikelihoods(self.model, self.tokenizer, pairs, self.window, self.batch_size)
        return [(float(v), bool(g)) for v, g in zip(ll, greedy)]

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        from lmkit.forward import text_nll

        texts = [r.args[0] for r in requests]
        nll, _ = text_nll(self.model, self.tokenizer, texts, "token", self.window, self.batch_size)
        return [-float(v) for v in nll]

    def generate_until(self, requests: list[Any]) -> list[str]:
        from lmkit.generation import generate

        out = []
        for request in requests:
            context, options = request.args[0], dict(request.args[1] if len(request.args) > 1 else {})
            until = options.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            sample = options.pop("do_sample", False)
            temperature = float(options.pop("temperature", 0.0) or 0.0) if sample else 0.0
            text = generate(self.model, self.tokenizer, context, int(options.pop("max_gen_toks", 256)),
                            temperature=temperature, stop=until[0] if until else None)
            for stop in until:  # generate stops at the first; the others cut the text here
                text = text.split(stop)[0]
            out.append(text)
        return out

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        raise ConfigError("lmkit models have no chat template (they are plain language models): run "
                          "the harness without --apply_chat_template")


def main() -> None:
    """The harness's command line (``lm_eval ...``) with the ``lmkit`` model registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
