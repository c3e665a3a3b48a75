"""The lmkit magics, in an in-process IPython shell; `lmkit.api.train` is replaced where noted."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError

import lmkit.api
from lmkit.config import TrainConfig
from lmkit.training.run import Run


@pytest.fixture()
def fake_train(monkeypatch):
    calls = []

    def train(config=None, *, reporters=None, stop=None, **overrides):
        calls.append({"config": config, "reporters": reporters, "stop": stop, **overrides})
        return Run(dir="runs/fake", config=config, model=None, tokenizer=None)

    monkeypatch.setattr(lmkit.api, "train", train)  # the magics call the API
    return calls


def test_load_ext_imports_neither_keras_nor_jax_and_can_be_repeated_and_unloaded():
    code = textwrap.dedent("""
        import sys
        from IPython.testing.globalipapp import start_ipython
        ip = start_ipython()
        ip.run_line_magic("load_ext", "lmkit")
        ip.run_line_magic("reload_ext", "lmkit")
        assert "lmtrain" in ip.magics_manager.magics["cell"]
        heavy = sorted(m for m in ("keras", "jax", "ipywidgets") if m in sys.modules)
        ip.run_line_magic("unload_ext", "lmkit")
        print(heavy, "lmtrain" in ip.magics_manager.magics["cell"],
              "lmlist" in ip.magics_manager.magics["line"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[] False False"


def test_cell_calls_train_once_with_the_config_and_binds_the_run(ip, fake_train):
    ip.user_ns["steps"] = 40
    ip.run_cell_magic("lmtrain", "-o shakespeare --set learning_rate=0.01", textwrap.dedent("""
        arch = "lstm"
        tokenizer = "char"
        units = 32
        max_steps = {steps}
        learning_rate = 2e-3

        [model]
        recurrent_dropout = 0.0
    """))
    assert len(fake_train) == 1
    expected = TrainConfig(arch="lstm", tokenizer="char", units=32, max_steps=40,
                           learning_rate=0.01, model={"recurrent_dropout": 0.0})
    assert fake_train[0]["config"] == expected
    assert fake_train[0]["reporters"] is None  # no frontend here: train's text progress
    assert fake_train[0]["stop"] is not None
    assert ip.user_ns["shakespeare"].config == expected


def test_line_form_returns_the_run_without_o(ip, fake_train):
    run = ip.run_line_magic("lmtrain", "arch=gru max_steps=5 batch_size=4")
    assert isinstance(run, Run)
    assert fake_train[0]["config"] == TrainConfig(arch="gru", max_steps=5, batch_size=4)


def test_config_file_is_overridden_by_cell_and_set(ip, fake_train, tmp_path):
    path = tmp_path / "base.toml"
    path.write_text('arch = "rnn"\nmax_steps = 7\nunits = 16\n')
    ip.run_cell_magic("lmtrain", f"--config {path} --set units=24 -o r", "max_steps = 9\n")
    assert fake_train[0]["config"] == TrainConfig(arch="rnn", max_steps=9, units=24)


def test_malformed_toml_names_the_line_within_the_cell(ip, fake_train):
    with pytest.raises(UsageError, match=r"%%lmtrain cell, line 3: malformed TOML"):
        ip.run_cell_magic("lmtrain", "-o r", 'arch = "lstm"\nunits = 32\nmax_steps = = 5\n')
    assert fake_train == []


def test_unknown_key_suggests_the_right_one_and_its_line(ip, fake_train):
    with pytest.raises(UsageError) as info:
        ip.run_cell_magic("lmtrain", "", 'arch = "lstm"\nlerning_rate = 0.1\n')
    message = str(info.value)
    assert "unknown config key 'lerning_rate'" in message
    assert "did you mean 'learning_rate'" in message
    assert "line 2 of the cell" in message


def test_undefined_variable_in_the_cell_is_reported_with_its_line(ip, fake_train):
    with pytest.raises(UsageError, match=r"line 2: cannot expand \{nowhere\}: NameError"):
        ip.run_cell_magic("lmtrain", "", 'arch = "lstm"\nmax_steps = {nowhere}\n')


def test_output_name_must_be_an_identifier(ip, fake_train):
    with pytest.raises(UsageError, match=r"-o expects a Python variable name .* got '1st-run'"):
        ip.run_cell_magic("lmtrain", "-o 1st-run", 'arch = "lstm"\n')
    assert fake_train == []


def test_user_errors_print_one_line_without_traceback(ip, fake_train, capsys):
    ip.run_cell('%lmtrain arch=lstm max_steps=-3')
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "UsageError: config key 'max_steps' must be at least 1, got -3" in text
    assert "Traceback" not in text


def test_generate_on_something_that_is_not_a_run(ip):
    ip.user_ns["numbers"] = [1, 2, 3]
    with pytest.raises(UsageError, match=r"'numbers' is a list, not an lmkit Run.*%lmload"):
        ip.run_line_magic("lmgenerate", 'numbers "ROMEO:"')
    with pytest.raises(UsageError, match=r"'missing' is neither a variable .* a run directory nor a pretrained checkpoint"):
        ip.run_line_magic("lmgenerate", 'missing "ROMEO:"')


def test_generate_passes_sampling_options_to_the_run(ip, capsys):
    class Recorder(Run):
        def generate(self, prompt, **options):
            self.seen = (prompt, options)
            return "ROMEO: hello"

    run = Recorder(dir="r", config=TrainConfig(), model=None, tokenizer=None)
    ip.user_ns["r"] = run
    ip.run_line_magic("lmgenerate", 'r "ROMEO:" -n 12 -t 0.5 --top-k 3 --seed 7')
    assert run.seen == ("ROMEO:", {"max_new_tokens": 12, "temperature": 0.5, "top_k": 3,
                                   "top_p": None, "seed": 7, "stop": None, "include_prompt": True})
    assert "ROMEO: hello" in capsys.readouterr().out


class _Continues(Run):
    """Continues every prompt with " hello", after the prompt when asked (as Run.generate)."""

    def generate(self, prompt, include_prompt=False, **options):
        return (prompt if include_prompt else "") + " hello"


def test_generate_shows_the_prompt_like_the_command_line_unless_no_prompt(ip, capsys):
    ip.user_ns["r"] = _Continues(dir="r", config=TrainConfig(), model=None, tokenizer=None)
    ip.run_line_magic("lmgenerate", 'r "ROMEO:" -n 3')
    assert capsys.readouterr().out == "ROMEO: hello\n"
    ip.run_line_magic("lmgenerate", 'r "ROMEO:" -n 3 --no-prompt')
    assert capsys.readouterr().out == " hello\n"


@pytest.mark.slow
def test_generate_continues_a_checkpoint_folder(ip, capsys, tmp_path):
    from hf_checkpoints import gpt2_folder

    folder = gpt2_folder(tmp_path / "tiny-gpt2")
    ip.run_line_magic("lmgenerate", f'{folder} "the cat" -n 6 -t 0')
    expected = lmkit.api.from_pretrained(folder).generate("the cat", max_new_tokens=6, temperature=0)
    assert capsys.readouterr().out == "the cat" + expected + "\n" and expected


def test_lmlist_shows_text_in_a_terminal_and_html_in_notebooks(ip, capsys):
    ip.run_line_magic("lmlist", "optimizers adam*")
    out = capsys.readouterr().out
    assert out.startswith("optimizers:")
    assert "adam" in out and "built-in" in out and "sgd" not in out
    from lmkit.api import list_entries
    from lmkit.notebook.listing import Listing

    html = Listing({"schedules": list_entries("schedules")})._repr_html_()
    assert "<table" in html and "warmup_cosine" in html


def test_lmlist_unknown_kind_suggests(ip):
    with pytest.raises(UsageError, match=r"unknown registry kind 'optimizer5'.*did you mean"):
        ip.run_line_magic("lmlist", "optimizer5")


def test_lmload_of_a_missing_directory(ip, tmp_path):
    with pytest.raises(UsageError, match=r"run directory '.*nothing-here' does not exist"):
        ip.run_line_magic("lmload", f"{tmp_path / 'nothing-here'} -o r")


def test_help_shows_usage_and_examples(ip):
    doc = ip.find_magic("lmtrain").__doc__
    assert "%lmtrain [-o NAME] [--config FILE] [--set KEY=VALUE]" in doc
    assert "%%lmtrain -o shakespeare" in doc


def test_missing_data_path_is_a_short_message(ip, tmp_path):
    missing = tmp_path / "no-such-corpus.txt"
    with pytest.raises(UsageError, match=r"no-such-corpus\.txt"):
        ip.run_cell_magic("lmtrain", "-o never_bound",
                          f'arch = "lstm"\ndata = "{missing}"\nout = "{tmp_path / "run"}"\n')
    assert "never_bound" not in ip.user_ns
