"""`lmkit bench`: each benchmark's quick run writes a well-formed result (no timed assertions)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import lmkit.cli.bench
from lmkit.cli.bench import main
from lmkit.cli import main as cli_main

# The benchmarks the README and the docs name.
DOCUMENTED = ("gpt_char", "lstm_classic", "generate", "startup", "memory", "defaults", "finetune",
              "scaling", "speedrun_char", "ablation", "speedrun_word", "translate", "lora",
              "lora_llama", "decode_hf", "embed_st", "finetune_hf")
# The quick runs checked here share their machinery (`benchmarks/_common.py`, the runner, the
# JSON record) with the others; each of those takes half a minute to minutes even when quick
# (defaults trains every architecture, finetune loads MiniLM and PyTorch), which the CI budget
# cannot hold. Benchmarks are run, not tested: docs/performance.md has their figures.
QUICK = ("gpt_char", "generate", "memory", "decode_hf")


@pytest.mark.slow
@pytest.mark.parametrize("name", QUICK)
def test_quick_run_writes_figures_machine_and_ratios(name, tmp_path, capfd):
    assert main([name, "--quick", "--out", str(tmp_path)]) == 0

    record = json.loads((tmp_path / f"{name}.quick.json").read_text())
    assert record["benchmark"] == name and record["quick"] is True
    assert record["command"] == f"lmkit bench {name} --quick"
    machine = record["machine"]
    assert machine["cpu"] and machine["logical_cores"] >= 1
    assert machine["versions"]["jax"] and machine["versions"]["keras"]
    assert record["figures"]
    assert record["ratios"], "every benchmark reports at least one ratio against its target"
    for key, value in record["ratios"].items():
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, key
    for key, target in record["targets"].items():
        assert target["value"] == record["ratios"][key]
        assert isinstance(target["met"], bool)
    printed = capfd.readouterr().out  # the benchmark runs in a child process
    assert f"wrote {tmp_path / f'{name}.quick.json'}" in printed
    assert "target" in printed


def test_help_lists_the_documented_benchmarks(capfd):
    assert main(["--help"]) == 0
    assert f"one of: {', '.join(DOCUMENTED)}" in " ".join(capfd.readouterr().out.split())  # wrapped


def test_unknown_benchmark_suggests_the_closest_name(capfd):
    assert main(["gpt_chr", "--quick"]) == 2
    assert "unknown benchmark 'gpt_chr'. Did you mean 'gpt_char'?" in capfd.readouterr().err


def test_missing_pytorch_says_how_to_install_it(tmp_path, monkeypatch, capfd):
    # A `torch` module that fails as an absent one does, ahead of the real one on the path.
    (tmp_path / "torch.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert main(["lstm_classic", "--quick", "--out", str(tmp_path)]) == 2
    assert "not installed" in (err := capfd.readouterr().err) and "pip install -e '.[bench]'" in err
    assert not (tmp_path / "lstm_classic.quick.json").exists()


def test_without_a_checkout_lmkit_bench_says_where_to_get_the_benchmarks(tmp_path, monkeypatch,
                                                                         capsys):
    # What an lmkit installed from a wheel sees: no benchmarks/ beside the package folder.
    monkeypatch.setattr(lmkit.cli.bench, "_ROOT", tmp_path)
    assert cli_main(["bench", "gpt_char", "--quick"]) == 2
    err = capsys.readouterr().err
    assert f"imported from {tmp_path / 'lmkit'}" in err
    assert "pip install -e '.[bench]'" in err and "python -m benchmarks NAME" in err


def test_speedrun_char_reads_both_logs_and_draws_both_curves(tmp_path):
    """The parts of `speedrun_char` that do not need an hour: the time to the target from each
    contender's evaluations, and the SVG of loss against wall time."""
    import xml.etree.ElementTree as ET

    from benchmarks.speedrun_char import first_below, write_svg

    nanogpt = [(3.0, 0, 4.2), (40.0, 1000, 2.1), (80.0, 2000, 1.886)]
    lmkit = [(5.0, 100, 2.5), (12.5, 300, 1.879), (20.0, 400, 1.85)]
    assert first_below(lmkit, 1.88) == 12.5
    assert first_below(nanogpt, 1.88) is None
    path = tmp_path / "curve.svg"
    write_svg({"nanoGPT": nanogpt, "lmkit": lmkit}, path)
    svg = ET.parse(path).getroot()
    lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert [len(line.get("points").split()) for line in lines] == [3, 3]
    assert {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")} >= {"nanoGPT", "lmkit"}


def test_ablation_rows_name_each_option_and_summarise_the_seeds():
    """`ablation`'s table from measured curves (no training): every option of `gpt` has a row
    that switches it alone on over the baseline; a row reports the median seconds to 1.88 of the
    seeds that reached it, and says how many did."""
    from benchmarks.ablation import CONFIGS, QUICK, report

    options = {k for sets in CONFIGS.values() for k in sets if k.startswith("model.")}
    assert options == {"model.rotary", "model.qk_norm", "model.mlp", "model.norm",
                       "model.zero_init", "model.logit_softcap"}
    baseline, default = QUICK
    runs = {baseline: [{"seed": s, "wall_s": 30.0, "curve": [(9.0, 150, 2.4 + s / 100)],
                        "val_loss": 2.4 + s / 100} for s in (0, 1, 2)],
            default: [{"seed": s, "wall_s": 25.0 + s, "val_loss": loss,
                       "curve": [(10.0, 250, (1.95, 1.85, 1.99)[s]), (20.0 + s, 300, loss)]}
                      for s, loss in ((0, 1.83), (1, 1.84), (2, 1.90))]}
    result = report(runs)
    rows = {row[0]: row for row in result.rows[1:]}
    assert rows[baseline][1] == "not reached" and rows[baseline][2] == "-/-/-"
    assert rows[default][1] == "15.0 (2/3 seeds)"  # seed 1 at 10 s, seed 0 at 20 s
    assert rows[default][2] == "300/250/-"
    assert result.ratios["baseline_final_loss_over_default"] == pytest.approx(2.41 / 1.84)


@pytest.mark.slow  # imports PyTorch
def test_speedrun_word_contenders_read_the_same_token_stream(tmp_path):
    """`speedrun_word` compares perplexities, so the PyTorch reference's reading of WikiText
    (whitespace words, an end-of-line token, the training file's vocabulary) must give lmkit's
    `whitespace` tokenizer's ids, one for one; the curves are drawn in perplexity."""
    import xml.etree.ElementTree as ET

    from benchmarks import torch_word_lm
    from benchmarks._svg import write_curves
    from benchmarks.speedrun_word import token_counts
    from lmkit.tokenizers import WhitespaceTokenizer

    train, valid = tmp_path / "train.tokens", tmp_path / "valid.tokens"
    train.write_text(" = Lobster = \n \n The U.S. @-@ based <unk> lobster , 3.5 cm .\n", "utf-8")
    valid.write_text(" The European lobster , 4 cm .\n", "utf-8")
    words = torch_word_lm.read_words(str(train))
    vocab = sorted(set(words) - {"<unk>"})
    tok = WhitespaceTokenizer.fit([train.read_text("utf-8")])
    theirs = [w if w in vocab else "<unk>" for w in torch_word_lm.read_words(str(valid))]
    ours = [tok.words[i - 1] if i else "<unk>" for i in tok.encode(valid.read_text("utf-8"))]
    assert [w.replace("<eos>", "\n") for w in theirs] == ours
    assert token_counts(train, valid) == {"vocabulary": len(vocab) + 1,
                                          "validation_tokens": len(theirs)}

    path = tmp_path / "curve.svg"
    write_curves({"torch": [(60.0, 1, 900.0), (180.0, 3, 410.0)],
                  "lmkit": [(20.0, 150, 2000.0), (50.0, 300, 405.0)]}, path, 410.0, "ppl", cap=1230)
    svg = ET.parse(path).getroot()
    lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert [len(line.get("points").split()) for line in lines] == [2, 2]
    top = min(float(p.split(",")[1]) for line in lines for p in line.get("points").split())
    assert top >= 50  # the 2000 above the cap sits on the top edge, inside the frame


def test_speedrun_word_in_two_invocations_races_lmkit_against_the_kept_reference(tmp_path,
                                                                                 monkeypatch):
    """``LMKIT_WORD_PART=reference`` keeps the reference's record; ``=lmkit`` races lmkit
    against it (the contenders' processes are stood in for: this checks the bookkeeping)."""
    from benchmarks import speedrun_word as sw
    from benchmarks.__main__ import run_benchmark

    out = tmp_path / "results"   # `--out`: the reference's record is kept there too
    counts = {"vocabulary": 10, "validation_tokens": 100}
    calls = []
    monkeypatch.setattr(sw, "_corpora", lambda work, quick: (work / "t", work / "v"))
    monkeypatch.setattr(sw, "token_counts", lambda train, valid: counts)
    monkeypatch.setattr(sw, "run_reference", lambda *a: calls.append("torch") or {
        "wall_s": 400.0, "curve": [(200.0, 1, 300.0), (400.0, 2, 250.0)], "best_ppl": 250.0,
        "threads": "1", **counts})
    monkeypatch.setattr(sw, "run_lmkit", lambda *a: calls.append(("lmkit", a[-1])) or {
        "wall_s": 160.0, "curve": [(160.0, 600, 240.0)], "best_ppl": 240.0,
        "stopped_at_target": True})

    monkeypatch.setenv("LMKIT_WORD_PART", "lmkit")
    with pytest.raises(RuntimeError, match="run the reference first"):
        run_benchmark("speedrun_word", quick=True, out=out)
    monkeypatch.setenv("LMKIT_WORD_PART", "reference")
    assert run_benchmark("speedrun_word", quick=True, out=out)["ratios"] == {}
    assert calls == ["torch"] and (out / "speedrun_word-reference.quick.json").is_file()
    monkeypatch.setenv("LMKIT_WORD_PART", "lmkit")
    record = run_benchmark("speedrun_word", quick=True, out=out)
    assert calls == ["torch", ("lmkit", 250.0)]  # the kept reference's target, not a new run
    assert record["ratios"]["torch_time_over_lmkit_time_to_target"] == pytest.approx(2.5)
    assert "two invocations" in record["notes"][0]
    monkeypatch.setenv("LMKIT_WORD_PART", "both")
    with pytest.raises(RuntimeError, match="use one of reference, lmkit"):
        sw.run(quick=True)


def test_embed_st_reports_when_the_vectors_differ_from_sentence_transformers():
    """`embed_st`'s verdict from measured times (no model): texts/s against the faster PyTorch
    setting, and embeddings off by more than the tolerance fail their target."""
    from benchmarks.embed_st import TOLERANCE, _report

    times = {"lmkit": {"median_s": 1.0}, "torch_2_threads": {"median_s": 4.0}, "torch_1_thread": {"median_s": 2.0}}
    reference = np.zeros((3, 4), np.float32)
    close = _report(["a", "b", "c"], times, {}, {"lmkit": 5.0, "sentence_transformers": 1.0},
                    {"lmkit": reference + TOLERANCE / 2, "sentence_transformers": reference})
    assert close.ratios["embed_speedup_vs_sentence_transformers"] == 2.0  # against one thread
    assert close.verdicts() == {"embed_speedup_vs_sentence_transformers": True, "embeddings_within_tolerance": True}
    far = _report(["a", "b", "c"], times, {}, {"lmkit": 5.0, "sentence_transformers": 1.0},
                  {"lmkit": reference + 2 * TOLERANCE, "sentence_transformers": reference})
    assert far.verdicts()["embeddings_within_tolerance"] is False


def test_embed_st_in_bfloat16_checks_the_vectors_cosine(monkeypatch):
    """Under ``LMKIT_PRECISION=mixed_bfloat16`` both sides round to bfloat16: vectors pass at a
    cosine of at least `BF16_COSINE` (an absolute tolerance of 1e-4 would fail them all)."""
    from benchmarks.embed_st import BF16_COSINE, TOLERANCE, _report

    monkeypatch.setenv("LMKIT_PRECISION", "mixed_bfloat16")
    times = {"lmkit": {"median_s": 1.0}, "torch_2_threads": {"median_s": 1.5}}
    first = {"lmkit": 5.0, "sentence_transformers": 1.0}
    reference = np.eye(3, 4, dtype=np.float32)

    def turned(cosine):  # each vector turned away from the reference to that cosine
        return reference * cosine + np.roll(reference, 1, axis=1) * np.sqrt(1 - cosine ** 2)

    near = _report(["a", "b", "c"], times, {}, first,
                   {"lmkit": turned(1 - (1 - BF16_COSINE) / 2), "sentence_transformers": reference})
    assert near.figures["max_abs_difference"] > TOLERANCE
    assert near.verdicts()["embeddings_within_tolerance"] is True
    assert near.figures["precision"] == "mixed_bfloat16"
    off = _report(["a", "b", "c"], times, {}, first,
                  {"lmkit": turned(0.99), "sentence_transformers": reference})
    assert off.verdicts()["embeddings_within_tolerance"] is False


def test_finetune_hf_compares_with_the_faster_trainer_and_the_worst_accuracy():
    """`finetune_hf`'s table from measured processes (no training): examples/s from each
    process's own training time, the faster Hugging Face setting as the reference, and lmkit's
    worst dev accuracy against the reference's best."""
    from benchmarks.finetune_hf import RECIPE, _examples, _report

    def runs(seconds, walls, accuracies):
        return [{"train_seconds": s, "wall_s": w, "accuracy": a, "steps": 1}
                for s, w, a in zip(seconds, walls, accuracies)]

    result = _report({"glue/sst2": {"lmkit": runs([10, 12], [30, 20], [0.80, 0.82]),
                                    "hf_trainer_2_threads": runs([40, 30], [50, 45], [0.81, 0.79]),
                                    "hf_trainer_1_thread": runs([25, 26], [40, 41], [0.83, 0.80])}}, RECIPE)
    trained = _examples("glue/sst2") * RECIPE["epochs"]
    assert trained == 400 * RECIPE["epochs"]  # the fixture's training sentences, each epoch
    assert result.ratios["sst2_train_speedup_vs_trainer"] == pytest.approx(2.5, abs=1e-3)  # 25 s vs 10 s
    assert result.ratios["sst2_whole_process_speedup_vs_trainer"] == 2.0  # 40 s vs 20 s
    assert result.ratios["sst2_dev_accuracy_lmkit_minus_trainer"] == pytest.approx(-0.03)
    assert [row[1] for row in result.rows[1:]] == ["lmkit", "hf_trainer_2_threads", "hf_trainer_1_thread"]


def test_finetune_hf_at_size_reads_the_first_training_rows_and_whole_dev_splits(tmp_path, monkeypatch):
    """``LMKIT_GLUE``: the first ``LMKIT_GLUE_TRAIN`` training examples of each task (header and
    MRPC's byte-order mark kept), the whole dev split, one epoch; ``--quick`` keeps the fixture."""
    from benchmarks.finetune_hf import GLUE, QUICK_RECIPE, SIZE_RECIPE, _data, _examples

    monkeypatch.setenv("LMKIT_GLUE", str(GLUE))
    monkeypatch.setenv("LMKIT_GLUE_TRAIN", "150")
    glue, recipe = _data(quick=False, tmp=str(tmp_path))
    assert recipe == SIZE_RECIPE and recipe["epochs"] == 1
    assert _examples("glue/sst2", glue) == _examples("glue/mrpc", glue) == 150
    mrpc = (glue / "MRPC" / "train.tsv").read_bytes()
    assert mrpc.startswith((GLUE / "MRPC" / "train.tsv").read_bytes()[:200])  # BOM and header
    assert (glue / "SST-2" / "dev.tsv").read_bytes() == (GLUE / "SST-2" / "dev.tsv").read_bytes()
    assert _data(quick=True, tmp=str(tmp_path)) == (GLUE, QUICK_RECIPE)
