"""`lmkit export --format hf`: a `gpt` run with GPT-2's options that `transformers` loads as
GPT2LMHeadModel with the same logits, greedy text and token ids; tokenizers converted to HF
`tokenizers`; the refusals (other options: tests/test_export_gpt_options.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lmkit
from lmkit.cli import main
from lmkit.config import TrainConfig
from lmkit.errors import ConfigError, ExportError, RunError
from lmkit.tokenizers import build_tokenizer, save_tokenizer
from lmkit.training.run import Run

FIXTURES = Path(__file__).parent / "fixtures"
SHAKESPEARE = (FIXTURES / "data" / "tinyshakespeare_50k.txt").read_text("utf-8")
WIKITEXT = (FIXTURES / "data" / "wikitext2_valid_6k.txt").read_text("utf-8")
# What no tokenizer here saw in training: accents, CJK, an emoji, the text "<unk>", tabs, runs of
# spaces, and every line boundary of str.splitlines.
UNSEEN = "Café naïve — 東京 😀 <unk> \u2028x\x85y\x0bz\x0c\x1cw\r\r\n\ttab  \nend \n"
SIZES = {"bpe": 500}
TINY = {"embed_dim": 32, "layers": 2, "heads": 2, "seq_len": 48}
#: the [model] options of a `gpt` that transformers' GPT2LMHeadModel computes exactly
EXPORTABLE = {"head_bias": False, "rotary": False, "qk_norm": False, "mlp": "gelu"}


def lines(text: str, per_chunk: int = 200) -> list[str]:
    """Line-aligned chunks, as Corpus.chunks yields them."""
    ls = text.splitlines(keepends=True)
    return ["".join(ls[i:i + per_chunk]) for i in range(0, len(ls), per_chunk)]


def fitted(name: str, text: str = SHAKESPEARE[:20_000]):
    return build_tokenizer(name, lines(text), vocab_size=SIZES.get(name))


# -- tokenizers (HF `tokenizers` only: fast) ------------------------------------------------------
@pytest.mark.parametrize("name", ["char", "byte", "bpe"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_to_hf_encodes_and_decodes_real_text_like_the_tokenizer(name: str, newline: str) -> None:
    import tokenizers as hf

    tok = fitted(name, SHAKESPEARE[:20_000].replace("\n", newline))  # "\r\n": a Windows file
    converted = hf.Tokenizer.from_str(tok.to_hf().to_str())  # through its JSON, as exported
    for text in (SHAKESPEARE[20_000:], WIKITEXT.replace("\n", newline), UNSEEN):
        ids = tok.encode(text)
        assert converted.encode(text).ids == ids
        assert converted.decode(ids) == tok.decode(ids)
    assert converted.get_vocab_size() == tok.vocab_size


def test_bpe_needs_the_line_split_that_to_hf_adds() -> None:
    """lmkit's BPE encodes line by line; HF on the whole text would split "\\r\\n" apart."""
    import tokenizers as hf

    text = SHAKESPEARE[:20_000].replace("\n", "\r\n")
    tok = fitted("bpe", text)
    plain = hf.Tokenizer.from_str(tok.hf.to_str())
    assert plain.encode(text).ids != tok.encode(text)
    assert tok.to_hf().encode(text).ids == tok.encode(text)


def test_char_unknowns_are_unk_in_both_and_decode_to_the_replacement_character() -> None:
    tok = fitted("char", SHAKESPEARE[:20_000] + "<>")
    converted = tok.to_hf()
    assert converted.encode("é😀").ids == tok.encode("é😀") == [0, 0]
    assert converted.decode([0, *tok.encode("a")]) == tok.decode([0, *tok.encode("a")]) == "\ufffda"
    literal = tok.encode("<unk>")  # the text, not the token: five known characters
    assert converted.encode("<unk>").ids == literal and 0 not in literal and len(literal) == 5


def test_byte_ids_cut_inside_a_character_decode_alike() -> None:
    tok = fitted("byte")
    ids = tok.encode("aé€😀")[:-1] + [0xFF, 0x41, 0xC3]  # 😀 cut, a stray byte, é cut
    assert tok.to_hf().decode(ids) == tok.decode(ids) == "aé€\ufffd\ufffdA\ufffd"


def test_word_tokenizer_is_refused_naming_those_that_convert() -> None:
    with pytest.raises(ExportError, match=r"'word' tokenizer .*one of: bpe, byte, char$"):
        fitted("word").to_hf()


# -- refusals (from the run's config alone: fast) -------------------------------------------------
def config_only_run(tmp: Path, **config: object) -> Path:
    """A run directory as a training leaves it before its first checkpoint: config and tokenizer.
    Export refuses from the config before it reads any weights."""
    tmp.mkdir()
    (tmp / "config.toml").write_text(TrainConfig(**config).to_toml())
    save_tokenizer(fitted("char"), tmp / "tokenizer.json")
    return tmp


def test_other_architectures_are_refused_listing_the_exportable_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = config_only_run(tmp_path / "run", arch="lstm")
    with pytest.raises(ExportError, match=r"'lstm' model .*exportable architectures: gpt, gpt2, llama$"):
        lmkit.export(run, tmp_path / "hf")
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmkit export: error: a 'lstm' model") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written


def test_output_folders_that_would_lose_files_are_refused(tmp_path: Path) -> None:
    run = config_only_run(tmp_path / "run", arch="gpt", model={"head_bias": False})
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match=r"hf is not empty \(notes\.txt\).*--overwrite"):
        lmkit.export(run, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    for holding_the_run in (run, tmp_path):
        with pytest.raises(RunError, match="holds the run"):
            lmkit.export(run, holding_the_run, overwrite=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(RunError, match="is a file"):
        lmkit.export(run, tmp_path / "file")
    with pytest.raises(ConfigError, match=r"unknown export format 'hff' \(did you mean 'hf'\?\)"):
        lmkit.export(run, tmp_path / "x", format="hff")
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "tokenizer.json"]


# -- real runs (slow: building a model, and importing torch and transformers, take seconds) -------
def make_run(tmp: Path, tokenizer: str = "char", seed: int = 0, **model: object) -> Run:
    """A `gpt` run directory whose weights are random at a scale that gives confident, varied
    predictions (initial N(0, 0.02) weights predict near-uniformly, which would prove little)."""
    from lmkit.build import build_model
    from lmkit.engine.rundir import RunDir

    options = {k: model.pop(k) for k in ("tie_embeddings",) if k in model}
    cfg = TrainConfig(arch="gpt", tokenizer=tokenizer, model=dict(model), out=str(tmp), **TINY,
                      **options)
    tok = fitted(tokenizer)
    net = build_model(cfg, tok.vocab_size)
    rng = np.random.default_rng(seed)
    for w in net.weights:
        w.assign(rng.normal(0.0, 0.15, w.shape) + (1.0 if "gamma" in w.path else 0.0))
    with RunDir.create(tmp, overwrite=False) as run_dir:
        run_dir.write_text("config.toml", cfg.to_toml())
        save_tokenizer(tok, run_dir.file("tokenizer.json"))
        run_dir.save_model(net)
    return Run(Path(tmp), cfg, net, tok)


@pytest.mark.slow
def test_cli_exports_and_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run", head_bias=False)
    out = tmp_path / "hf"
    assert main(["export", str(run.dir), "--format", "hf", "--out", str(out)]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["n_positions"], config["activation_function"],
            config["tie_word_embeddings"]) == ("gpt2", TINY["seq_len"], "gelu_new", True)
    assert main(["export", str(run.dir), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    (out / "config.json").write_text("{}")
    assert main(["export", str(run.dir), "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]


@pytest.mark.slow
def test_a_word_run_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", tokenizer="word", head_bias=False)
    with pytest.raises(ExportError, match="'word' tokenizer"):
        lmkit.export(run, tmp_path / "hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def hf_logits(folder: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits.numpy()


def hf_greedy(folder: Path, ids: list[int], n: int | None) -> list[int]:
    """`generate`'s greedy continuation of `ids` (`n` None: as long as the exported defaults say)."""
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    length = {} if n is None else {"max_new_tokens": n}
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), do_sample=False, **length)
    return out[0, len(ids):].tolist()


def assert_same_ids(folder: Path, tok: object, texts: list[str]) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    for hf_tok in (AutoTokenizer.from_pretrained(folder),
                   PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))):
        for text in texts:
            ids = tok.encode(text)
            assert hf_tok(text)["input_ids"] == ids
            assert hf_tok.decode(ids) == tok.decode(ids)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A char-level gpt trained briefly, exportable (no head bias)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    return lmkit.train(data=str(FIXTURES / "core" / "shakespeare_30k.txt"), **TINY, batch_size=8,
                       max_steps=150, learning_rate=1e-2, warmup_steps=10, eval_every=150,
                       eval_batches=1, sample_tokens=0, model=EXPORTABLE, out=str(out),
                       reporters=[])


@pytest.mark.slow
def test_a_trained_run_gives_transformers_equal_logits_and_greedy_text(trained: Run,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "hf"
    assert main(["export", str(trained.dir), "--out", str(out)]) == 0
    window = SHAKESPEARE[30_000:30_000 + TINY["seq_len"]]  # text the run was not trained on
    ids = trained.tokenizer.encode(window)
    ours = np.asarray(trained.model(np.array([ids], dtype="int32")))
    theirs = hf_logits(out, ids)
    assert np.abs(ours - theirs).max() < 1e-4
    assert ours.std() > 1.0  # a trained model's logits, not near-uniform ones
    prompt = "ROMEO:\nWhat"
    text = trained.generate(prompt, max_new_tokens=10, temperature=0)
    assert trained.tokenizer.decode(hf_greedy(out, trained.tokenizer.encode(prompt), 10)) == text
    # without a length, generate fills the context and stops (past it GPT-2 has no positions)
    assert len(hf_greedy(out, trained.tokenizer.encode(prompt), None)) == TINY["seq_len"] - len(prompt)
    assert_same_ids(out, trained.tokenizer, [window, UNSEEN])


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer,tie", [("char", False), ("byte", True), ("bpe", False)])
def test_untied_byte_and_bpe_runs_give_equal_logits_greedy_text_and_ids(
        tmp_path: Path, tokenizer: str, tie: bool) -> None:
    run = make_run(tmp_path / "run", tokenizer=tokenizer, tie_embeddings=tie, head_bias=False)
    out = lmkit.export(run, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is tie
    ids = run.tokenizer.encode(WIKITEXT)[:TINY["seq_len"]]
    ours = np.asarray(run.model(np.array([ids], dtype="int32")))
    assert np.abs(ours - hf_logits(out, ids)).max() < 1e-4
    prompt = "The lobster"
    text = run.generate(prompt, max_new_tokens=10, temperature=0)
    assert run.tokenizer.decode(hf_greedy(out, run.tokenizer.encode(prompt), 10)) == text
    assert_same_ids(out, run.tokenizer, [SHAKESPEARE[25_000:27_000], WIKITEXT, UNSEEN])
