"""`lmkit.api` as the front ends use it: one decision "is this a pretrained checkpoint?",
`open_model` for whatever a path or name holds, `info`, `list_components`, and the names the
front ends import from it instead of reaching past it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hf_checkpoints import bert_folder

from lmkit import api
from lmkit.cli import main

EVAL = Path(__file__).parent / "fixtures" / "eval" / "glue"
TINY = ["arch=lstm", "units=16", "embed_dim=16", "seq_len=16", "batch_size=4", "max_steps=2",
        "eval_every=2", "eval_batches=1", "sample_tokens=0", "data=tinyshakespeare"]


def test_is_checkpoint_asks_the_folder_then_the_registered_names(tmp_path: Path, monkeypatch) -> None:
    hf, run = tmp_path / "hf", tmp_path / "run"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    run.mkdir()
    (run / "config.toml").write_text('arch = "lstm"\n')
    assert api.is_checkpoint(hf) and api.is_checkpoint(str(hf))
    assert not api.is_checkpoint(run)
    assert api.is_checkpoint("minilm-l6")  # the name the lmkit-minilm plugin registers
    assert not api.is_checkpoint("no-such-checkpoint")
    monkeypatch.chdir(tmp_path)
    Path("minilm-l6").mkdir()  # a folder of that name is a path, not the registered checkpoint
    assert not api.is_checkpoint("minilm-l6")


def test_list_components_gives_every_kind_or_one_by_either_name() -> None:
    everything = api.list_components()
    assert {"architectures", "optimizers", "tasks", "pretrained"} <= set(everything)
    lstms = api.list_components("architecture", "*lstm*")
    assert list(lstms) == ["architectures"]
    assert [e.name for e in lstms["architectures"]] == ["classic_lstm", "lstm"]


def test_importing_the_api_stays_cheap_and_its_late_names_resolve() -> None:
    code = ("import sys, lmkit.api as api\n"
            "cheap = [m for m in ('numpy', 'keras', 'jax') if m in sys.modules]\n"
            "print(cheap, api.SCRATCH, sorted(api.SUITES), api.Run.__name__, api.Pretrained.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "scratch", "['glue',", "'superglue']", "Run", "Pretrained"]


@pytest.mark.slow
def test_open_model_opens_a_checkpoint_a_run_and_a_fine_tuned_folder(tmp_path: Path) -> None:
    checkpoint = bert_folder(tmp_path / "tiny-bert")
    opened = api.open_model(checkpoint)
    assert isinstance(opened, api.Pretrained) and opened.arch == "bert"

    run_dir = tmp_path / "run"
    run = api.train(**dict(s.split("=") for s in TINY), out=str(run_dir))
    reopened = api.open_model(run_dir)
    assert isinstance(reopened, api.Run) and reopened.summary["steps"] == 2
    described = api.info(run_dir)
    assert described.summary["steps"] == 2 and described.interrupted_at is None
    assert described.history == len(run.history) and 'arch = "lstm"' in described.config

    tuned = tmp_path / "sst2"
    assert main(["eval", str(checkpoint), "--task", "glue/sst2", "--data", str(EVAL / "SST-2"),
                 "--quiet", "--set", "max_steps=2", "--set", "batch_size=8", "--out", str(tuned)]) == 0
    classifier = api.open_model(tuned)
    assert isinstance(classifier, api.FineTuned) and classifier.task.name == "glue/sst2"
