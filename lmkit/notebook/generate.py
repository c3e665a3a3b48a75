"""The generation widget: a prompt box, sampling controls, a Generate button and the output.

The generated text is shown after the prompt (bold) unless "Show prompt" is unticked, the rule of
``lmkit generate`` and ``%lmgenerate`` (README, "Generating text"). Displayed in a notebook, the
text goes to an output of its own below the controls (`StaticCopy`), so a saved notebook keeps it.

>>> GenerateWidget(run)                    # doctest: +SKIP
>>> %lmgenerate shakespeare --ui          # doctest: +SKIP
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from lmkit.notebook.static_copy import StaticCopy

__all__ = ["GenerateWidget"]


class GenerateWidget(widgets.VBox):
    """Sample from `run` interactively; every control maps to an argument of `Run.generate`.

    ``top_k = 0`` and ``top_p = 1`` mean "no limit"; ``temperature = 0`` is greedy; an empty seed
    means a fresh sample each time. The tokenizer's unknown id is never sampled.
    """

    def __init__(self, run: Any, prompt: str = "\n", show_prompt: bool = True, **kwargs: Any) -> None:
        self.run = run
        self.copy = StaticCopy()
        self.prompt = widgets.Textarea(value=prompt, description="Prompt",
                                       layout=widgets.Layout(width="95%", height="5em"))
        self.max_new_tokens = widgets.IntSlider(value=200, min=1, max=2000, step=1,
                                                description="Length")
        # 0 is greedy (the most likely token each time); the description is wider than
        # ipywidgets' default label so "Temperature" is not cut
        self.temperature = widgets.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.05,
                                               description="Temperature",
                                               tooltip="0: greedy (always the most likely token)",
                                               style={"description_width": "initial"})
        self.top_k = widgets.IntText(value=0, description="Top-k", tooltip="0: no limit")
        self.top_p = widgets.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05,
                                         description="Top-p")
        self.seed = widgets.Text(value="", description="Seed", placeholder="random")
        self.show_prompt = widgets.Checkbox(value=show_prompt, description="Show prompt",
                                            tooltip="show the prompt (bold) before the generated text")
        self.button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.button.on_click(self._on_click)
        self.output = widgets.HTML("")
        self.output.add_class("lmkit-generated")
        super().__init__([
            self.prompt,
            widgets.HBox([self.max_new_tokens, self.temperature]),
            widgets.HBox([self.top_k, self.top_p, self.seed]),
            widgets.HBox([self.button, self.show_prompt]),
            self.output,
        ], **kwargs)
        self.add_class("lmkit-generate")

    def options(self) -> dict[str, Any]:
        """The keyword arguments of `Run.generate` that the controls currently describe."""
        seed = self.seed.value.strip()
        return {
            "max_new_tokens": self.max_new_tokens.value,
            "temperature": self.temperature.value,
            "top_k": self.top_k.value if self.top_k.value > 0 else None,
            "top_p": self.top_p.value if self.top_p.value < 1.0 else None,
            "seed": int(seed) if seed.lstrip("-").isdigit() else None,
        }

    def generate(self) -> str:
        """Generate with the current controls, show the text and return it."""
        self.button.disabled = True
        self._show("<i>generating…</i>", "generating…")
        try:
            text = self.run.generate(self.prompt.value, **self.options())
            prompt = self.prompt.value if self.show_prompt.value else ""
            self._show(f"<pre class='lmkit-generated-text' style='white-space:pre-wrap'>"
                       f"<b>{html.escape(prompt)}</b>{html.escape(text)}</pre>", prompt + text)
            return text
        except Exception as exc:  # shown in the widget: a button callback has no cell output
            error = f"{type(exc).__name__}: {exc}"
            self._show(f"<pre style='color:var(--jp-error-color1, #b00)'>{html.escape(error)}</pre>", error)
            raise
        finally:
            self.button.disabled = False

    def _show(self, html_text: str, plain: str) -> None:
        self.output.value = html_text
        self.copy.update(html_text, plain)

    def _ipython_display_(self) -> None:
        self.copy.show(self, hide=[self.output])

    def _on_click(self, _button: Any) -> None:
        self.generate()

