"""The `lmkit` command: subcommands, user errors as one paragraph, Ctrl-C keeps the run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmkit.cli import main

CORPUS = Path(__file__).parent / "fixtures" / "core" / "shakespeare_30k.txt"
TINY = ["--set", f"data={json.dumps(str(CORPUS))}", "--set", "layers=1", "--set", "embed_dim=32",
        "--set", "heads=2", "--set", "seq_len=32", "--set", "batch_size=8", "--set", "eval_every=5",
        "--set", "eval_batches=2", "--set", "sample_tokens=30"]


@pytest.mark.slow
def test_train_generate_info_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--set", "max_steps=10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "step 10/10" in printed and "sample:" in printed and str(out) in printed
    assert main(["generate", str(out), "--prompt", "KING:", "--max-new-tokens", "25", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("KING:") and len(text.rstrip("\n")) >= 6
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "steps        10" in info and "val_loss" in info and 'arch = "gpt"' in info
    assert main(["list", "optimizers"]) == 0
    listing = capsys.readouterr().out
    assert "adamw" in listing and "[built-in]" in listing and "lion" in listing


@pytest.mark.slow
def test_config_file_and_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('arch = "lstm"\nunits = 16\nembed_dim = 16\nlayers = 1\nmax_steps = 3\n')
    assert main(["train", str(cfg), *TINY, "--set", "max_steps=4", "--out", str(tmp_path / "r")]) == 0
    saved = (tmp_path / "r" / "config.toml").read_text()
    assert 'arch = "lstm"' in saved and "max_steps = 4" in saved


@pytest.mark.parametrize("argv,expected", [
    (["train", "--set", "arch=lstn"], "unknown architecture 'lstn' (did you mean 'lstm'?)"),
    (["train", "--set", "learnin_rate=1"], "unknown config key 'learnin_rate' (did you mean 'learning_rate'?)"),
    (["train", "--set", "data=/no/such/file.txt"], "not found: there is no file or folder at /no/such/file.txt"),
    (["train", "--set", "batch_size=-3"], "'batch_size' must be at least 1, got -3"),
    (["list", "architecturez"], "did you mean 'architectures'"),
    (["info", "/no/such/run"], "run directory '/no/such/run' does not exist"),
    (["generate", "/no/such/run", "--prompt", "x"], "does not exist"),
])
def test_user_errors_exit_2_with_one_paragraph(argv: list[str], expected: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("sig,reason,code", [(signal.SIGINT, "interrupted", 0),
                                             (signal.SIGTERM, "terminated", 143)])
def test_ctrl_c_or_sigterm_stops_cleanly_and_keeps_the_run(tmp_path: Path, sig: int, reason: str,
                                                         code: int) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmkit.cli", "train", *TINY, "--set", "max_steps=100000",
         "--set", "steps_per_dispatch=1", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until training is really stepping
        lines.append(line)
        if line.startswith("step ") or time.monotonic() > deadline:
            break
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=120)
    output = "".join(lines) + rest
    assert proc.returncode == code, output
    assert f"training {reason} at step" in output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reason"] == reason and 0 < summary["steps"] < 100000
    assert (out / "checkpoint.npz").is_file() and (out / "model.keras").is_file()


@pytest.mark.slow
def test_lmkit_train_imports_keras_without_what_training_never_uses() -> None:
    """`lmkit train` imports Keras without scikit-learn, matplotlib, pandas, IPython and
    requests (a third of Keras's import); afterwards each imports as usual."""
    extras = ("sklearn", "matplotlib", "pandas", "IPython", "requests")
    code = (f"import sys, lmkit.cli as cli; cli._import_keras_lean(); import keras; "
            f"print([n for n in {extras!r} if n in sys.modules]); "
            f"import {', '.join(extras)}; print(keras.ops.sum(keras.ops.ones(3)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["[]", "3.0"]


def test_a_config_file_that_is_not_utf8_is_one_clear_error(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes('sample_prompt = "caf\u00e9"\n'.encode("latin-1"))
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "latin1.toml: not UTF-8 text (byte 20)" in err and "Traceback" not in err


def test_info_piped_into_a_reader_that_leaves_early_is_not_an_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text("\n".join(f"key_{i} = {i}" for i in range(20000)))
    shell = f"{sys.executable} -m lmkit.cli info {run_dir} | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout == f"run {run_dir}\n"
    assert "BrokenPipeError" not in done.stderr and done.returncode == 0, done.stderr


def test_a_run_that_learned_nothing_prints_the_hint(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from lmkit.cli import _print_summary

    hint = "val_loss 3.300 is about the unigram loss (3.320): ..."
    _print_summary(SimpleNamespace(dir="runs/x", summary={
        "steps": 400, "reason": "completed", "elapsed_s": 30.0, "val_loss": 3.3, "hint": hint,
        "sample": "ab"}))
    out = capsys.readouterr().out
    assert f"hint: {hint}" in out and out.index("hint:") < out.index("sample:")


def test_dry_run_prints_every_key_with_its_value_and_source_and_trains_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.config import TrainConfig

    cfg = tmp_path / "c.toml"
    cfg.write_text('# gpt with a bigger head\nembed_dim = 64\n[model]\nlogit_softcap = 15.0\n')
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--dry-run", "--set", "model.head_bias=false", "--set", "seed=3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = {line.split(" = ")[0]: line for line in printed.splitlines()}
    # every key once (a table's entries as dotted keys), and nothing trained or written
    keys = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {k for k in lines if not k.startswith("model.")} == keys - {"model"}
    assert not out.exists()

    def shown(key: str) -> tuple[str, str]:
        value, source = lines[key].split(" = ", 1)[1].split("#", 1)
        return value.strip(), source.strip()

    assert shown("embed_dim") == ("64", f"{cfg}, line 2")
    assert shown("model.logit_softcap") == ("15.0", f"{cfg}, line 4")
    assert shown("seed") == ("3", "--set") and shown("out") == (f'"{out}"', "--out")
    assert shown("heads") == ("4", "default")
    # the architecture's other [model] defaults stay when one entry is set (issue 31, bug 1)
    assert shown("model.head_bias") == ("false", "--set")
    for key, value in (("rotary", "true"), ("mlp", '"relu2"'), ("qk_norm", "true"), ("zero_init", "true")):
        assert shown(f"model.{key}") == (value, "architecture: gpt")
    assert shown("optimizer") == ('"muon"', "architecture: gpt")


def _fake_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """`evaluate_runs` as a fine-tuning with a checkpoint folder leaves it: weights, summary, lock."""
    import lmkit.api

    def evaluate_runs(runs, tasks, data, reporters=(), **options):
        folder = Path(options["checkpoint_dir"])
        folder.mkdir(parents=True)
        (folder / "checkpoint.npz").write_bytes(b"\0" * 3 * 2 ** 20)
        (folder / "summary.json").write_text("{}")
        (folder / ".lock").write_text("")

        def save(out):
            (Path(out) / "metrics.json").write_text("{}")
            (Path(out) / "predictions.tsv").write_text("index\tprediction\tlabel\n")
            return Path(out)

        return SimpleNamespace(results=[SimpleNamespace(save=save)])

    monkeypatch.setattr(lmkit.api, "evaluate_runs", evaluate_runs, raising=False)


def test_eval_out_lists_what_it_wrote_and_drops_the_weights_when_asked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_evaluation(monkeypatch)
    kept = tmp_path / "kept"
    assert main(["eval", "scratch", "--task", "glue/sst2", "--quiet", "--out", str(kept)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {kept}:"
    weights = next(line for line in lines if "checkpoint.npz" in line)
    assert "3.0 MiB" in weights and "fine-tuned weights" in weights
    assert any("metrics.json" in line for line in lines) and "--no-weights" in lines[-1]

    dropped = tmp_path / "dropped"
    assert main(["eval", "scratch", "--task", "glue/sst2", "--quiet", "--no-weights", "--out", str(dropped)]) == 0
    printed = capsys.readouterr().out
    assert not (dropped / "checkpoint.npz").exists() and "checkpoint.npz" not in printed
    assert (dropped / "metrics.json").is_file() and "predictions.tsv" in printed


def test_eval_of_a_misspelt_name_suggests_pretrained_names_at_once(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from lmkit.registry import pretrained

    pretrained.register("tiny-test-ckpt")(lambda: "/nowhere")
    try:
        started = time.monotonic()
        assert main(["eval", "tiny-test-ckpd", "--task", "glue/sst2", "--data", "nowhere"]) == 2
        err = capsys.readouterr().err
        assert "'tiny-test-ckpd' is neither a run directory nor a pretrained checkpoint" in err
        assert "(did you mean 'tiny-test-ckpt'?)" in err and "tiny-test-ckpt" in err
        assert main(["eval", "scrach", "--task", "glue/sst2"]) == 2
        assert "(did you mean 'scratch'?)" in capsys.readouterr().err
        assert time.monotonic() - started < 5  # refused before any model or data is read
    finally:
        pretrained.unregister("tiny-test-ckpt")


def test_generate_shows_the_prompt_unless_no_prompt(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import lmkit.api

    class Continues:
        def generate(self, prompt, include_prompt=False, **options):
            return (prompt if include_prompt else "") + " hello"

    monkeypatch.setattr(lmkit.api, "load", lambda path: Continues(), raising=False)
    assert main(["generate", "runs/x", "--prompt", "KING:"]) == 0
    assert capsys.readouterr().out == "KING: hello\n"
    assert main(["generate", "runs/x", "--prompt", "KING:", "--no-prompt"]) == 0
    assert capsys.readouterr().out == " hello\n"
