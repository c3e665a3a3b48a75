"""Bad input as data: every case of tests/fixtures/bad_inputs/cases.toml through every surface.

A case passes when lmkit answers with its one clear error (the CLI: exit 2 and one line; the
Python API: an `LmkitError`; a %%lmtrain cell: a usage error without traceback). A traceback,
another exception type or silent acceptance fails the case. Property-based cases check that no
config value and no TOML text can end in anything but a clean result or a `ConfigError`.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmkit
from lmkit.cli import main
from lmkit.config import TrainConfig, dump_toml, parse_set_options, parse_toml
from lmkit.errors import ConfigError, DataError, LmkitError

FIXTURES = Path(__file__).parent / "fixtures"
CASES = tomllib.loads((FIXTURES / "bad_inputs" / "cases.toml").read_text(encoding="utf-8"))
CORPUS = FIXTURES / "core" / "shakespeare_30k.txt"
# a valid tiny training: each case changes it, so anything the check lets through trains 2 steps
BASE = [f"data={json.dumps(str(CORPUS))}", "max_steps=2", "layers=1", "embed_dim=16", "units=16",
        "heads=2", "seq_len=16", "batch_size=4", "eval_every=2", "eval_batches=1",
        "sample_tokens=4"]


def _fill(text: str, tmp: Path) -> str:
    (tmp / "afile").touch()
    return (text.replace("{file}", str(tmp / "afile")).replace("{tmp}", str(tmp))
            .replace("{long}", "x" * 300))


def _settings(case: dict[str, Any], tmp: Path) -> list[str]:
    return [*BASE, f"out={json.dumps(str(tmp / 'run'))}", *(_fill(s, tmp) for s in case["set"])]


def _case_id(case: dict[str, Any]) -> str:
    return " ".join(case["set"] or [f"[model] {case['model']}"])[:40]


@pytest.mark.parametrize("case", CASES["config"], ids=_case_id)
def test_cli_gives_one_clear_line(case: dict[str, Any], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train"]
    if "model" in case:
        toml = tmp_path / "model.toml"
        toml.write_text("[model]\n" + "".join(f"{k} = {v!r}\n" for k, v in case["model"].items()))
        argv.append(str(toml))
    for setting in _settings(case, tmp_path):
        argv += ["--set", setting]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert case["error"] in err and "Traceback" not in err
    assert err.count("\n") == 1  # one line


@pytest.mark.parametrize("case", CASES["config"], ids=_case_id)
def test_python_api_raises_an_lmkit_error(case: dict[str, Any], tmp_path: Path) -> None:
    options = parse_set_options(_settings(case, tmp_path))
    if "model" in case:
        options["model"] = case["model"]
    with pytest.raises(LmkitError, match=None) as raised:
        lmkit.train(**options)
    assert case["error"] in str(raised.value)


@pytest.mark.parametrize("case", CASES["config"], ids=_case_id)
def test_lmtrain_cell_shows_the_error_not_a_traceback(case: dict[str, Any], tmp_path: Path,
                                                       ip: Any) -> None:
    from IPython.core.error import UsageError

    options = parse_set_options(_settings(case, tmp_path))  # later settings win, as with --set
    if "model" in case:
        options["model"] = case["model"]
    cell = dump_toml(options)
    with pytest.raises(UsageError) as raised:
        ip.run_cell_magic("lmtrain", "", cell)
    assert case["error"] in str(raised.value)


# -- commands on a finished run, and damaged run files -----------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    argv = ["train"]
    for setting in [*BASE, "checkpoint_every=2"]:
        argv += ["--set", setting]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def _argv(case: dict[str, Any], run: Path) -> list[str]:
    return [a.replace("{run}", str(run)) for a in case["argv"]]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES["run"], ids=lambda c: " ".join(c["argv"][2:])[:40])
def test_commands_on_a_run_give_one_clear_line(case: dict[str, Any], finished_run: Path,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = shutil.copytree(finished_run, tmp_path / "run")
    capsys.readouterr()
    assert main(_argv(case, run)) == 2
    err = capsys.readouterr().err
    assert case["error"] in err and "Traceback" not in err and err.count("\n") == 1


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 3], "empty": b"",
                      "garble": b"arch = \n" + data}[how])


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES["damaged"], ids=lambda c: f"{c['damage']} {c['file']} {c['argv'][0]}")
def test_a_damaged_run_file_is_named_or_passed_over(case: dict[str, Any], finished_run: Path,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = shutil.copytree(finished_run, tmp_path / "run")
    _damage(run / case["file"], case["damage"])
    capsys.readouterr()
    code = main(_argv(case, run))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if "error" in case:
        assert code == 2 and case["error"] in err and err.count("\n") == 1
    else:  # the other copy of the weights is used, and the user is told which
        assert code == 0 and f"warning: " in err and case["warning"] in err


def _plant_python_objects(path: Path) -> None:
    np.savez(path, header=np.frombuffer(b'{"step": 1, "model": 1, "optimizer": 0}', np.uint8),
             model_0=np.array([{"a": 1}], dtype=object))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "truncate", "not a zip", "python objects"])
def test_a_refused_resume_leaves_every_file_of_the_run_as_it_was(damage: str, finished_run: Path,
                                                                tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = shutil.copytree(finished_run, tmp_path / "run")
    checkpoint = run / "checkpoint.npz"
    if damage == "missing":
        checkpoint.unlink()
    elif damage == "truncate":
        checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    elif damage == "not a zip":
        checkpoint.write_bytes(b"not a zip at all")
    else:
        checkpoint.unlink()
        _plant_python_objects(checkpoint)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "max_steps=30"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before  # config.toml (max_steps) and metrics.jsonl untouched


@pytest.mark.slow
@pytest.mark.parametrize("value, argv, message", [
    (np.nan, ["generate", "{run}", "--prompt", "A"], "holds NaN or infinite values"),
    (np.inf, ["generate", "{run}", "--prompt", "A"], "holds NaN or infinite values"),
    (1 + 1j, ["train", "--resume", "{run}", "--set", "max_steps=4"], "stored as complex128"),
], ids=["nan-generate", "inf-generate", "complex-resume"])
def test_a_checkpoint_weight_lmkit_never_writes_is_refused(value: Any, argv: list[str], message: str,
                                                           finished_run: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = shutil.copytree(finished_run, tmp_path / "run")
    (run / "model.keras").unlink()  # the checkpoint is the only copy of the weights
    with np.load(run / "checkpoint.npz") as data:
        arrays = dict(data)
    arrays["model_0"] = np.full(arrays["model_0"].shape, value)
    np.savez(run / "checkpoint.npz", **arrays)
    capsys.readouterr()
    assert main([a.replace("{run}", str(run)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err


# -- property-based: no value and no TOML text ends in anything but a result or a ConfigError ---
_values = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                         st.integers(), max_size=2))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(TrainConfig.__dataclass_fields__)), value=_values)
def test_any_value_of_any_key_is_accepted_or_a_config_error(key: str, value: Any) -> None:
    try:
        cfg = TrainConfig.from_dict({key: value})
    except ConfigError:
        return
    # accepted: then it is a valid, round-trippable config
    assert TrainConfig.from_dict(parse_toml(cfg.to_toml())) == cfg


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_any_toml_cell_parses_or_is_a_config_error(text: str) -> None:
    try:
        values = parse_toml(text)
    except ConfigError:
        return
    try:
        TrainConfig.from_dict(values)
    except ConfigError:
        pass


# -- %%lmtrain: notebook values go in as TOML values, comments are never evaluated -------------
@pytest.fixture
def cell_configs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The configs the magic would train, without training."""
    from lmkit.training.run import Run

    configs: list[Any] = []

    def train(config: Any = None, **_: Any) -> Run:
        configs.append(config)
        return Run(dir="runs/fake", config=config, model=None, tokenizer=None)

    monkeypatch.setattr(lmkit.api, "train", train)
    return configs


def test_a_cell_comment_is_not_evaluated(ip: Any, cell_configs: list[Any], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ip.run_cell_magic("lmtrain", "", "arch = 'lstm'\n"
                      "# {open('side_effect', 'w').write('ran')}\nmax_steps = 3  # {1/0}\n")
    assert not (tmp_path / "side_effect").exists()
    assert cell_configs[0].max_steps == 3


@pytest.mark.parametrize("cell", ['sample_prompt = "{prompt}"', "sample_prompt = {prompt}",
                                  'sample_prompt = """{prompt}"""'])
def test_a_notebook_string_cannot_rewrite_other_keys(cell: str, ip: Any,
                                                      cell_configs: list[Any]) -> None:
    prompt = 'ROMEO"\nout = "elsewhere'
    ip.user_ns["prompt"] = prompt
    ip.run_cell_magic("lmtrain", "", f"arch = 'lstm'\n{cell}\n")
    assert cell_configs[0].sample_prompt == prompt
    assert cell_configs[0].out is None


def test_a_value_a_literal_string_cannot_hold_is_one_clear_error(ip: Any, cell_configs: list[Any]) -> None:
    from IPython.core.error import UsageError

    ip.user_ns["prompt"] = "it's"
    with pytest.raises(UsageError, match=r"line 2: cannot expand \{prompt\}.*quote it with"):
        ip.run_cell_magic("lmtrain", "", "arch = 'lstm'\nsample_prompt = '{prompt}'\n")
    assert not cell_configs


# -- code and data only from where the user alone can write ------------------------------------
@pytest.mark.parametrize("name, config", [("glue", "mrpc"), ("accuracy", None), ("rouge", None)])
def test_metric_modules_run_from_lmkit_itself_not_a_copy_in_hf_home(name: str, config: str | None,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from lmkit.evaluation.metrics import load_metric, metric_path

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    metric = load_metric(name, config)
    source = Path(sys.modules[type(metric).__module__].__file__).resolve()
    assert source == (metric_path(name) / f"{name}.py").resolve()
    assert not list(tmp_path.rglob(f"{name}.py"))  # no copy made to be imported later


@pytest.mark.parametrize("where", ["hf", "hf/modules"])
def test_a_hugging_face_cache_others_can_write_is_refused(where: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from lmkit.evaluation.loaders import _from_hub
    from lmkit.evaluation.metrics import load_metric
    from lmkit.evaluation.tasks import get_task

    (tmp_path / "hf" / "modules").mkdir(parents=True)
    (tmp_path / where).chmod(0o777)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match=r"Hugging Face cache .* writable by other users.*chmod go-w"):
        load_metric("glue", "sst2")
    monkeypatch.setattr("lmkit.evaluation.loaders._hub_unreachable", lambda: None)
    with pytest.raises(ConfigError, match=r"Hugging Face cache .* writable by other users"):
        _from_hub(get_task("sst2"), "validation")


# -- silent nonsense becomes a warning ---------------------------------------------------------
class _Counter:
    """The smallest trainee: one weight that counts the steps."""

    def __init__(self) -> None:
        self.w = np.zeros(1, np.float32)

    def train(self, step: int, k: int) -> np.ndarray:
        self.w = self.w + k
        return np.full(k, 1.0, np.float32)

    def evaluate(self) -> dict[str, float]:
        return {}

    def learning_rate(self, step: int) -> float:
        return 0.1

    def model_arrays(self) -> list[np.ndarray]:
        return [self.w.copy()]

    def optimizer_arrays(self) -> list[np.ndarray]:
        return []

    def restore(self, model: list[np.ndarray], optimizer: list[np.ndarray], source: str) -> None:
        self.w = model[0].copy()


@pytest.mark.parametrize("then, warned", [({"data": "a"}, False), ({"data": "b"}, True),
                                           ({"data": "a", "validation_data": "v2"}, True),
                                           ({}, True)])
def test_resuming_on_other_data_is_warned(then: dict[str, str], warned: bool, tmp_path: Path) -> None:
    import warnings

    from lmkit.engine import engine
    from lmkit.engine.rundir import RunDir
    from lmkit.errors import RunWarning

    def train(total: int, data: dict[str, str], resume: bool) -> None:
        run_dir = RunDir(tmp_path) if resume else RunDir.create(tmp_path, overwrite=True)
        engine.run(_Counter(), engine.Plan(total, checkpoint_every=2),
                   engine.Job("count", 1, data=data), run_dir=run_dir, reporters=[], resume=resume)

    train(2, {"data": "a", "validation_data": "v"}, False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(4, {"validation_data": "v", **then}, True)
    messages = [str(w.message) for w in caught if issubclass(w.category, RunWarning)]
    assert bool(messages) == warned, messages
    if warned:
        assert "resuming from step 2 on other data" in messages[0]


@pytest.mark.slow
def test_a_resume_on_an_edited_corpus_and_a_foreign_validation_corpus_are_warned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus.txt"
    shutil.copy(CORPUS, corpus)
    foreign = tmp_path / "greek.txt"
    foreign.write_text("Καλημέρα κόσμε, τι κάνεις σήμερα; " * 40, encoding="utf-8")
    run = tmp_path / "run"
    argv = ["train", "--out", str(run)]
    for setting in [*BASE[1:], f"data={json.dumps(str(corpus))}",
                    f"validation_data={json.dumps(str(foreign))}", "checkpoint_every=2"]:
        argv += ["--set", setting]
    assert main(argv) == 0
    assert "of the tokens of validation_data=" in capsys.readouterr().err
    corpus.write_text(corpus.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    assert main(["train", "--resume", str(run), "--set", "max_steps=4"]) == 0
    assert "resuming from step 2 on other data than the run was trained on: data" in capsys.readouterr().err


@pytest.mark.parametrize("encoding", ["utf_16_be", "latin-1"])
def test_a_utf8_file_read_in_another_encoding_is_warned(encoding: str, tmp_path: Path) -> None:
    from lmkit.data.corpus import open_corpus
    from lmkit.errors import LmkitWarning

    path = tmp_path / "text.txt"
    path.write_text("Café au lait, déjà vu.\nNaïve résumé.\n", encoding="utf-8")
    with pytest.warns(LmkitWarning, match=r"reads as UTF-8, but encoding='(iso8859-1|utf-16-be)' "
                                          r"decodes it differently"):
        open_corpus(str(path), encoding)


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_a_file_in_its_own_encoding_is_not_warned(encoding: str, tmp_path: Path) -> None:
    import warnings

    from lmkit.data.corpus import open_corpus

    path = tmp_path / "text.txt"
    path.write_text("Café au lait, déjà vu.\nNaïve résumé.\n", encoding=encoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_corpus(str(path), encoding)


# -- only regular files are read: a FIFO never blocks a command --------------------------------
def test_an_imdb_review_that_is_a_fifo_is_refused_not_waited_for(tmp_path: Path) -> None:
    import os

    from lmkit.evaluation import load_split

    root = shutil.copytree(FIXTURES / "eval" / "imdb", tmp_path / "imdb")
    os.mkfifo(root / "test" / "pos" / "0_fifo.txt")
    with pytest.raises(DataError, match=r"0_fifo.txt is not a regular file \(a FIFO"):
        load_split("imdb", root)


def test_a_corpus_that_is_a_fifo_is_refused_not_waited_for(tmp_path: Path) -> None:
    import os

    from lmkit.data.corpus import open_corpus

    os.mkfifo(tmp_path / "corpus.txt")
    with pytest.raises(DataError, match=r"is not a regular file \(a FIFO"):
        open_corpus(str(tmp_path / "corpus.txt"))
    (tmp_path / "real.txt").write_text("some text\n")
    assert open_corpus(str(tmp_path)).files == (tmp_path / "real.txt",)  # a folder skips it


# -- lmkit info on damaged run files, and the environment: one line, never a traceback ---------
def _described_run(folder: Path) -> Path:
    """A run folder as training leaves it, for `lmkit info` (no weights needed)."""
    folder.mkdir()
    (folder / "config.toml").write_text(TrainConfig().to_toml(), encoding="utf-8")
    (folder / "tokenizer.json").write_text('{"type": "char", "chars": ["a"]}', encoding="utf-8")
    (folder / "summary.json").write_text(json.dumps({"arch": "gpt", "steps": 2, "val_loss": 4.0,
                                                     "val_bits_per_char": 5.8}), encoding="utf-8")
    (folder / "metrics.jsonl").write_text('{"event": "eval", "step": 2, "metrics": {"val_loss": 4.0}}\n',
                                          encoding="utf-8")
    return folder


@pytest.mark.parametrize("file, content, error", [
    ("summary.json", b"\xff\xfe{}", "summary.json is damaged ('utf-8' codec"),
    ("summary.json", b"[1, 2]", "summary.json is damaged (it holds a JSON list, not an object)"),
    ("summary.json", b'{"arch": "gpt", "steps": "two", "val_loss": "abc"}', None),
    ("summary.json", b'{"arch": "gpt", "val_loss": 4.0}', None),
    ("metrics.jsonl", b'\xff\xfe\n[1]\n"s"\n{"event": "eval", "step": 1}\n', None),
], ids=["summary-not-utf8", "summary-list", "summary-strings", "summary-no-steps", "metrics-damaged"])
def test_info_on_damaged_run_files_is_one_line_or_a_listing(file: str, content: bytes, error: str | None,
                                                            tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = _described_run(tmp_path / "run")
    (run / file).write_bytes(content)
    code = main(["info", str(run)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if error:
        assert code == 2 and error in err and err.count("\n") == 1
    else:
        assert code == 0 and "config:" in out


def test_info_aligns_long_keys_and_shows_unset_keys_as_none(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = _described_run(tmp_path / "run")
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "  vocab_size = none\n" in out and '"none"' not in out
    metrics = [line for line in out.splitlines() if line.startswith("  val_")]
    assert len({line.index("4.0000" if "loss" in line else "5.8000") for line in metrics}) == 1


def test_a_deeply_nested_toml_is_one_config_error() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_toml("a = " + "[" * 5000 + "]" * 5000)


@pytest.mark.parametrize("env, error", [
    ({"LMKIT_CACHE_DIR": "{file}"}, "cannot be created (File exists)"),
    ({"LMKIT_CACHE_DIR": "{file}/below"}, "cannot be created (Not a directory)"),
    ({"LMKIT_TOKEN_CACHE_GB": "abc"}, "LMKIT_TOKEN_CACHE_GB must be a number of GiB"),
    ({"LMKIT_TOKEN_CACHE_GB": "-1"}, "LMKIT_TOKEN_CACHE_GB must be a number of GiB"),
], ids=["cache-a-file", "cache-below-a-file", "gb-abc", "gb-negative"])
def test_a_bad_cache_setting_is_one_line(env: dict[str, str], error: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LMKIT_CACHE_DIR", str(tmp_path / "cache"))
    for key, value in env.items():
        monkeypatch.setenv(key, _fill(value, tmp_path))
    argv = ["train"]
    for setting in _settings({"set": []}, tmp_path):
        argv += ["--set", setting]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert error in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_run_with_another_tokenizer_is_refused_not_decoded(finished_run: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = shutil.copytree(finished_run, tmp_path / "run")
    tokenizer = json.loads((run / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["chars"] = tokenizer["chars"][:5]
    (run / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "A", "--max-new-tokens", "20"]) == 2
    err = capsys.readouterr().err
    assert "is not the tokenizer this run was trained with" in err and err.count("\n") == 1, err


# -- bits per character of validation text that decodes to nothing (issue 30) -------------------
@pytest.mark.parametrize("metric", ["bits_per_char", "bits_per_byte"])
def test_bits_per_char_of_no_text_is_a_clear_error_not_a_zero_division(metric: str) -> None:
    from lmkit.registry import metrics

    finalize = metrics.get(metric).finalize
    assert finalize({"nll": 2.0 * np.log(2.0), "count": 2, "chars": 1, "bytes": 1}) == pytest.approx(2.0)
    with pytest.raises(DataError, match=rf"decode to 0 {metric[9:]}s \(5 tokens\).*drop {metric}"):
        finalize({"nll": 3.0, "count": 5, "chars": 0, "bytes": 0})


@pytest.mark.slow
def test_a_run_whose_validation_text_decodes_to_nothing_stops_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A tokenizer whose ids decode to no characters (a plugin's, special tokens dropped on
    decoding) made the first evaluation divide by zero after training had begun."""
    from lmkit.tokenizers import CharTokenizer

    monkeypatch.setattr(CharTokenizer, "decode", lambda self, ids: "")
    data = tmp_path / "tiny.txt"
    data.write_text("to be or not to be\n" * 20, encoding="utf-8")
    out = tmp_path / "run"
    argv = ["train", "--set", f"data={str(data)!r}", "--set", "seq_len=8", "--set", "layers=1",
            "--set", "embed_dim=8", "--set", "heads=1", "--set", "max_steps=2",
            "--set", "eval_every=1", "--set", "sample_tokens=0", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bits per char is undefined here: the evaluated validation targets decode to 0 chars" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "checkpoint.npz").exists()  # refused before the first step
