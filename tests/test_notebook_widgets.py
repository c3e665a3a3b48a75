"""The training dashboard and the generation widget, driven by events and clicks in-process."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from contrast import contrast as _contrast

from lmkit.config import TrainConfig
from lmkit.notebook import Dashboard, GenerateWidget
from lmkit.notebook.charts import Series, downsample, line_chart
from lmkit.training.run import Run
from lmkit.engine.events import (CheckpointEvent, EndEvent, EvalEvent, StartEvent, StepEvent,
                                   StopSignal)


def _start(total=100):
    return StartEvent(run_dir="runs/x", total_steps=total, start_step=0, arch="lstm",
                      parameters=12345, backend="jax", devices="cpu:0", tokens_per_step=768)


def _step(step, loss, total=100):
    return StepEvent(step=step, total_steps=total, epoch=step / 50, loss=loss,
                     learning_rate=1e-3, tokens_per_second=5000.0, elapsed=step / 10,
                     eta=(total - step) / 10)


def _points(svg: str, series: str) -> int:
    match = re.search(rf'class="lmkit-series lmkit-{series}" data-points="(\d+)"', svg)
    return int(match.group(1)) if match else 0


def test_dashboard_follows_the_events():
    dash = Dashboard(StopSignal(), refresh=0.0)
    dash(_start())
    for step in range(1, 41):
        dash(_step(step, 4.0 - step / 20))
    dash(EvalEvent(step=40, metrics={"val_loss": 2.5, "val_perplexity": math.exp(2.5)}))
    assert dash.progress.max == 100 and dash.progress.value == 40
    assert "step <b>40</b> / 100" in dash.progress_text.value
    assert "ETA 6s" in dash.progress_text.value
    assert "5,000 tokens/s" in dash.stats.value and "learning rate 0.001" in dash.stats.value
    assert "jax" in dash.header.value and "12,345 parameters" in dash.header.value
    assert _points(dash.loss_chart.value, "train") == 40
    assert _points(dash.loss_chart.value, "val") == 1
    assert _points(dash.ppl_chart.value, "val") == 1


def test_a_fine_tuning_scored_while_training_charts_its_task_metric_not_perplexity():
    import dataclasses

    dash = Dashboard(StopSignal(), refresh=0.0)
    dash(dataclasses.replace(_start(), monitor="val_bleu"))
    for step in range(1, 21):
        dash(_step(step, 4.0 - step / 20))
        if step % 10 == 0:
            dash(EvalEvent(step=step, metrics={"val_bleu": 12.0 + step / 10, "val_chrf": 30.0}))
    chart = dash.ppl_chart.value
    assert "bleu" in chart and "perplexity" not in chart
    assert _points(chart, "val") == 2 and _points(chart, "train") == 0
    assert _points(dash.loss_chart.value, "train") == 20
    assert ">val<" not in dash.loss_chart.value  # no validation loss: no "val" legend without a line
    assert dash._best_step() == 20  # the higher BLEU is the better
    assert "val_bleu" in dash.eval_table.value


def test_a_classifier_fine_tuning_shows_no_perplexity_anywhere():
    """A classifier's loss is per example: its exponential is no perplexity (issue 31, item 9)."""
    import dataclasses

    dash = Dashboard(StopSignal(), refresh=0.0)
    dash(dataclasses.replace(_start(), token_loss=False))
    for step in range(1, 21):
        dash(_step(step, 0.7 - step / 100))
    dash(EndEvent(reason="completed", step=20, elapsed=2.0, summary={}))
    assert "perplexity" not in dash.stats.value and "loss <b>0.5000</b>" in dash.stats.value
    assert dash.ppl_chart.value == "" and _points(dash.loss_chart.value, "train") == 20
    assert "perplexity" not in dash.picture() and "perplexity" not in dash.html()


def test_a_language_model_shows_its_perplexity():
    dash = Dashboard(StopSignal(), refresh=0.0)
    dash(_start())
    dash(_step(1, 2.0))
    assert "perplexity 7.39" in dash.stats.value and "perplexity" in dash.ppl_chart.value


def test_before_the_pace_is_measured_the_dashboard_says_so():
    dash = Dashboard(StopSignal(), refresh=0.0)
    dash(_start())
    dash(StepEvent(step=10, total_steps=100, epoch=0.2, loss=3.0, learning_rate=1e-3,
                   tokens_per_second=None, elapsed=12.0, eta=None))  # the compiling dispatch
    assert "ETA …" in dash.progress_text.value
    assert "measuring tokens/s" in dash.stats.value


def test_redraws_are_throttled_but_evaluations_and_the_end_always_draw():
    dash = Dashboard(StopSignal(), refresh=3600.0)
    dash(_start())
    dash(_step(1, 3.0))
    dash(_step(2, 2.9))
    assert dash.progress.value == 0  # second step within the refresh interval: not drawn yet
    dash(EvalEvent(step=2, metrics={"val_loss": 3.1}))
    assert dash.progress.value == 2


def test_stop_button_sets_the_stop_signal():
    stop = StopSignal()
    dash = Dashboard(stop)
    dash(_start())
    dash.stop_button.click()
    assert stop.is_set() and stop.reason == "stopped"
    assert dash.stop_button.disabled


def test_end_shows_a_summary_with_the_sample():
    dash = Dashboard(StopSignal())
    dash(_start())
    dash(_step(10, 2.0))
    dash(CheckpointEvent(step=10, path="runs/x/checkpoint.npz"))
    dash(EndEvent(step=10, reason="stopped", elapsed=3.0,
                  summary={"val_loss": 2.25, "sample": "ROMEO: <b>hi</b>"}))
    assert "training stopped" in dash.header.value
    assert "2.2500" in dash.summary.value
    assert "ROMEO: &lt;b&gt;hi&lt;/b&gt;" in dash.summary.value
    assert dash.progress.bar_style == "warning"
    bundle = dash._bundle()  # what a saved notebook keeps besides the widget state
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == "lmkit: training stopped at step 10 after 3s"
    assert "<svg" in bundle["text/html"] and "lmkit-sample" in bundle["text/html"]


def test_chart_skips_non_finite_values_and_downsamples_long_series():
    svg = line_chart([Series("train", [(1, 2.0), (2, float("nan")), (3, 1.0)])], title="loss")
    assert _points(svg, "train") == 2
    long = [(float(i), float(i)) for i in range(10_001)]
    kept = downsample(long, 400)
    assert len(kept) <= 401 and kept[-1] == long[-1] and kept[0] == long[0]


class _Recorder(Run):
    def generate(self, prompt, **options):
        self.seen = (prompt, options)
        return " there"


def test_generate_widget_passes_its_controls_to_the_run():
    run = _Recorder(dir="r", config=TrainConfig(), model=None, tokenizer=None)
    widget = GenerateWidget(run)
    widget.prompt.value = "hello"
    widget.temperature.value = 0.7
    widget.top_k.value = 5
    widget.seed.value = "3"
    widget.button.click()
    assert run.seen == ("hello", {"max_new_tokens": 200, "temperature": 0.7, "top_k": 5,
                                  "top_p": None, "seed": 3})
    assert "<b>hello</b> there" in widget.output.value
    assert not widget.button.disabled


def test_generate_widget_show_prompt_box_follows_the_rule_of_the_command_line():
    run = _Recorder(dir="r", config=TrainConfig(), model=None, tokenizer=None)
    widget = GenerateWidget(run, prompt="hello", show_prompt=False)
    widget.button.click()
    assert "hello" not in widget.output.value and " there" in widget.output.value
    assert widget.copy.bundle["text/plain"] == " there"
    widget.show_prompt.value = True
    widget.button.click()
    assert widget.copy.bundle["text/plain"] == "hello there"


def test_generate_widget_temperature_zero_is_greedy():
    run = _Recorder(dir="r", config=TrainConfig(), model=None, tokenizer=None)
    widget = GenerateWidget(run)
    widget.temperature.value = 0.0
    assert widget.temperature.value == 0.0  # not clamped to a positive minimum
    widget.button.click()
    assert run.seen[1]["temperature"] == 0.0
    assert widget.temperature.style.description_width == "initial"  # the label is not cut


def test_generate_widget_shows_errors():
    class Broken(Run):
        def generate(self, prompt, **options):
            raise ValueError("prompt has characters outside the vocabulary")

    widget = GenerateWidget(Broken(dir="r", config=TrainConfig(), model=None, tokenizer=None))
    with pytest.raises(ValueError):
        widget.generate()
    assert "outside the vocabulary" in widget.output.value


def test_every_widget_comes_from_lmkit_notebook_which_imports_without_ipywidgets():
    code = textwrap.dedent("""
        import sys
        import lmkit
        names = [n for n in dir(lmkit.notebook) if not n.startswith("_")]
        print(names, "ipywidgets" in sys.modules)
        from lmkit.notebook import Dashboard, EvalPanel, GenerateWidget
        from lmkit.notebook.eval_panel import EvalPanel as home
        print(EvalPanel is home and lmkit.notebook.GenerateWidget is GenerateWidget)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    listed, same = out.stdout.strip().splitlines()[-2:]
    assert listed == "['Dashboard', 'EvalPanel', 'GenerateWidget'] False"
    assert same == "True"


def _trained_dashboard(reason="completed"):
    dash = Dashboard(StopSignal(), refresh=0.0)
    dash(_start(400))
    assert "compiling" in dash.progress_text.value  # before the first step: say what happens
    for step in range(10, 401, 10):
        dash(_step(step, 4.0 * math.exp(-step / 150) + 1.5 + 0.2 * (-1) ** (step // 10), total=400))
        if step % 40 == 0:
            dash(EvalEvent(step=step, metrics={"val_loss": 2.4 + abs(step - 320) / 400,
                                               "val_accuracy": 0.3}))
    dash(EndEvent(step=400, reason=reason, elapsed=42.0,
                  summary={"val_loss": 2.4, "sample": "ROMEO: hi", "hint": ""}))
    return dash


def test_charts_are_readable_smoothed_and_mark_the_best_step():
    dash = _trained_dashboard()
    svg = dash.loss_chart.value
    assert 'width="100%"' in svg  # sized by the cell, not 320 px
    ticks = re.findall(r'class="lmkit-tick"[^>]*>([^<]+)<', svg)
    assert {"0", "100", "200", "300", "400"} <= set(ticks)  # round numbers, not 53/107/160
    assert _points(svg, "train") == 40 and _points(svg, "train-raw") == 40
    assert 'class="lmkit-series lmkit-train-raw"' in svg and 'stroke-opacity="0.3"' in svg
    assert "best 2.400 @ 320" in svg
    # colours follow JupyterLab's theme; nothing is drawn in a fixed black
    assert "var(--jp-ui-font-color1" in svg and 'fill="#000"' not in svg and "black" not in svg
    dash.log_scale.value = True
    assert "(log scale)" in dash.loss_chart.value and "(log scale)" in dash.ppl_chart.value
    rows = re.findall(r"<tr", dash.eval_table.value)
    assert len(rows) == 1 + 10  # a header and one row per evaluation
    assert "lmkit-best-row" in dash.eval_table.value


def test_after_stop_no_eta_and_a_finished_run_is_not_red():
    dash = Dashboard(StopSignal(), refresh=0.0)
    dash(_start())
    dash(_step(10, 2.0))
    assert "ETA" in dash.progress_text.value
    dash.stop_button.click()
    assert "ETA" not in dash.progress_text.value
    done = _trained_dashboard()
    assert done.stop_button.description == "Finished" and done.stop_button.button_style != "danger"
    assert "ETA" not in done.progress_text.value


def test_the_final_output_is_a_picture_that_needs_no_widget_state():
    dash = _trained_dashboard("stopped")
    bundle = dash.static_bundle()
    assert "application/vnd.jupyter.widget-view+json" not in bundle  # no broken-link icon
    assert "text/html" not in bundle  # untrusted, JupyterLab would sanitize it to run-on text
    assert bundle["image/svg+xml"].startswith("<svg") and "lmkit-train" in bundle["image/svg+xml"]
    # no white slab in a dark theme: transparent, in the ink of the theme (see the theme tests)
    assert not re.search(r'<rect width="960"', bundle["image/svg+xml"])
    assert "step" in bundle["image/svg+xml"] and "← best" in bundle["image/svg+xml"]
    assert bundle["image/png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert bundle["text/plain"] == "lmkit: training stopped at step 400 after 42s"


def _theme_setting(tmp_path, monkeypatch, theme: str) -> None:
    folder = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True)
    (folder / "themes.jupyterlab-settings").write_text(
        '{\n    // the theme, as JupyterLab writes it\n    "theme": "%s"\n}' % theme)
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(tmp_path / "settings"))


@pytest.mark.parametrize("theme,page", [("JupyterLab Light", "#ffffff"), ("JupyterLab Dark", "#111111")])
def test_the_final_picture_is_in_the_ink_of_the_theme_it_was_made_in(tmp_path, monkeypatch, theme, page):
    # page: the theme's notebook background (--jp-layout-color0)
    _theme_setting(tmp_path, monkeypatch, theme)
    svg = _trained_dashboard().static_bundle()["image/svg+xml"]
    inks = set(re.findall(r'<text[^>]*?(?:fill="|fill:)(#[0-9a-f]{6})', svg))
    assert inks and min(_contrast(ink, page) for ink in inks) >= 4.5, (inks, page)
    curves = set(re.findall(r'class="lmkit-series lmkit-(?:train|val)"[^>]*stroke:(#[0-9a-f]{6})', svg))
    assert curves and min(_contrast(c, page) for c in curves) >= 3.0, (curves, page)


def _theme_variables(theme: str) -> dict[str, str]:
    """The CSS variables of an installed JupyterLab theme (``light``, ``dark``), as it ships them."""
    import jupyterlab

    css = (Path(jupyterlab.__file__).parent / "themes" / "@jupyterlab" / f"theme-{theme}-extension"
           / "index.css").read_text(encoding="utf-8")
    return dict(re.findall(r"(--[\w-]+):\s*([^;}]+)", css))


def _resolve(value: str, variables: dict[str, str]) -> str:
    """A CSS colour with its ``var(--name, fallback)`` replaced by the theme's value."""
    found = re.fullmatch(r"\s*var\((--[\w-]+)\s*,\s*(.+)\)\s*", value)
    if found is None:
        return value.strip()
    name, fallback = found.groups()
    return _resolve(variables.get(name, fallback), variables)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_live_curves_contrast_with_the_page_in_jupyterlab_s_own_themes(theme):
    from lmkit.notebook.charts import LIVE

    variables = _theme_variables(theme)
    page = _resolve(variables["--jp-layout-color0"], variables)  # the notebook's background
    page = {"white": "#ffffff"}.get(page, page)
    page = "#" + "".join(c * 2 for c in page[1:]) if len(page) == 4 else page  # #111 -> #111111
    for curve in ("train", "val"):  # WCAG's 3:1 for graphics
        colour = _resolve(LIVE.color(curve), variables)
        assert _contrast(colour, page) >= 3.0, f"{theme}: {curve} {colour} on {page}"


def test_the_final_png_is_transparent(tmp_path, monkeypatch):
    import io

    from matplotlib.image import imread

    _theme_setting(tmp_path, monkeypatch, "JupyterLab Dark")
    pixels = imread(io.BytesIO(_trained_dashboard().static_bundle()["image/png"]), format="png")
    assert pixels.shape[2] == 4 and pixels[0, 0, 3] == 0 and pixels[-1, -1, 3] == 0


def test_titles_name_the_run_once_and_read_as_words():
    dash = Dashboard(StopSignal(), refresh=0.0, title="mine on glue/sst2")
    name = "lstm-20261206-101500 on glue/sst2"  # a fine-tuning without a folder: run_dir == arch
    dash(StartEvent(run_dir=name, total_steps=100, start_step=0, arch=name, parameters=12345,
                    backend="jax", devices="cpu:0", tokens_per_step=768))
    dash(_step(10, 2.0))
    dash(EndEvent(step=10, reason="time_budget", elapsed=3.0, summary={}))
    shown = [dash.header.value, dash.summary.value, dash.text(), dash.picture()]
    assert all("time_budget" not in text for text in shown)
    assert "time budget reached" in dash.header.value and "time budget reached" in dash.text()
    assert dash.header.value.count("glue/sst2") == 1 and "mine on glue/sst2" in dash.header.value
    assert "lmkit · mine on glue/sst2 · time budget reached at step 10" in dash.picture()
    assert dash.stop_button.description == "Time's up"
    trained = Dashboard(StopSignal(), refresh=0.0, title="shakespeare")
    trained(_start())  # a language model's run: its variable, its architecture and its folder
    assert "<b>shakespeare</b> (lstm, 12,345 parameters)" in trained.header.value
    assert "<code>runs/x</code>" in trained.header.value


def test_evaluation_table_numbers_are_right_aligned_and_best_labels_sit_off_the_curves():
    dash = _trained_dashboard()
    cells = re.findall(r"<td style='([^']*)'>\d", dash.eval_table.value)
    assert cells and all("text-align:right" in style for style in cells)
    best = re.search(r'<g class="lmkit-best">.*?<text x="[\d.]+" y="([\d.]+)"', dash.loss_chart.value)
    assert best and float(best.group(1)) < 26  # in the title row, above the plot area


def test_smoothing_of_a_short_run_follows_the_curve():
    # 30 points of a falling loss: TensorBoard's 0.9 left the smoothed curve 0.5 above the raw one
    from lmkit.notebook.charts import smooth

    raw = [(float(i), 4.0 - 0.1 * i) for i in range(30)]
    assert smooth(raw)[-1][1] - raw[-1][1] <= 0.15
    long = [(float(i), 4.0 - 0.001 * i) for i in range(1000)]
    assert smooth(long)[-1][1] == pytest.approx(smooth(long, 0.9)[-1][1])  # long runs: as before


def test_the_evaluation_table_keeps_its_height_with_the_best_row():
    dash = Dashboard(StopSignal(), refresh=0.0)
    dash(_start(1000))
    for step in range(10, 1001, 10):  # 100 evaluations; the best at step 50
        dash(_step(step, 2.0, total=1000))
        dash(EvalEvent(step=step, metrics={"val_loss": 1.0 if step == 50 else 2.0 + step / 1000}))
    rows = re.findall(r"<tr[ >]", dash.eval_table.value)
    assert len(rows) == 1 + 1 + 10  # the header, the best row and the last ten
    assert "lmkit-best-row" in dash.eval_table.value and ">50</td>" in dash.eval_table.value
    assert ">1000</td>" in dash.eval_table.value and ">500</td>" not in dash.eval_table.value
