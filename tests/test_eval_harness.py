"""The lm-evaluation-harness adapter: a local task YAML, offline, scored as lmkit's zero-shot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

lm_eval = pytest.importorskip("lm_eval")

from lmkit.errors import ConfigError  # noqa: E402
from lmkit.evaluation.evaluator import evaluate  # noqa: E402
from lmkit.evaluation.loaders import load_split  # noqa: E402
from lmkit.evaluation.zeroshot import choice_pairs  # noqa: E402
from lmkit.registry import architectures, tokenizers  # noqa: E402

SUPERGLUE = Path(__file__).parent / "fixtures" / "superglue"
# COPA as lmkit prompts it (`superglue._copa_choices`), in the harness's YAML
COPA_YAML = """task: lmkit_copa
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{premise.strip().rstrip('.')}}}} {{{{'because' if question == 'cause' else 'so'}}}}"
doc_to_choice: "{{{{[choice1[:1].lower() + choice1[1:], choice2[:1].lower() + choice2[1:]]}}}}"
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
"""


@pytest.fixture(scope="module")
def char_gpt() -> SimpleNamespace:
    """A tiny char-level GPT (random weights: the harness and lmkit must agree anyway)."""
    import keras

    keras.utils.set_random_seed(3)
    copa = load_split("superglue/copa", SUPERGLUE, "val")
    text = "".join(c for pairs in choice_pairs(copa) for pair in pairs for c in pair)
    tokenizer = tokenizers.get("char").fit([text])
    model = architectures.get("gpt")(tokenizer.vocab_size, embed_dim=16, layers=1, heads=2, seq_len=48)
    model(np.zeros((1, 4), np.int32))
    return SimpleNamespace(model=model, tokenizer=tokenizer, dir="char-gpt")


@pytest.fixture
def tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "lmkit_copa.yaml").write_text(COPA_YAML.format(data=SUPERGLUE / "COPA" / "val.jsonl"))
    return folder


@pytest.mark.slow  # the harness builds its task through `datasets`: about 40 s on 2 loaded cores
def test_harness_scores_equal_lmkit_zero_shot(char_gpt: SimpleNamespace, tasks: Path) -> None:
    from lm_eval.tasks import TaskManager

    from lmkit.evaluation.harness import LmkitLM

    ours = evaluate(char_gpt, "superglue/copa", SUPERGLUE, method="zeroshot")
    out = lm_eval.simple_evaluate(model=LmkitLM(model=char_gpt.model, tokenizer=char_gpt.tokenizer),
                                  tasks=["lmkit_copa"], task_manager=TaskManager(include_path=str(tasks)),
                                  log_samples=True)
    assert out["results"]["lmkit_copa"]["acc,none"] == pytest.approx(ours.metrics["accuracy"])
    samples = sorted(out["samples"]["lmkit_copa"], key=lambda s: s["doc_id"])
    picked = [int(np.argmax([r[0] for r in s["filtered_resps"]])) for s in samples]
    assert picked == ours.predictions.tolist()


def test_requests_lmkit_cannot_serve_say_why() -> None:
    from lmkit.evaluation.harness import LmkitLM

    with pytest.raises(ConfigError, match="needs run=DIR"):
        LmkitLM()
    lm = LmkitLM(model=SimpleNamespace(max_context=8), tokenizer=object())
    with pytest.raises(ConfigError, match="no chat template"):
        lm.apply_chat_template([{"role": "user", "content": "hi"}])


@pytest.mark.slow  # builds and compiles a tiny GPT: about 20 s on 2 loaded cores
def test_rolling_and_generation_requests(char_gpt: SimpleNamespace) -> None:
    from lmkit.evaluation.harness import LmkitLM
    from lmkit.forward import text_nll
    from lmkit.generation import generate

    lm = LmkitLM(model=char_gpt.model, tokenizer=char_gpt.tokenizer)
    text = "the sun was rising because my body cast a shadow"
    rolled = lm.loglikelihood_rolling([SimpleNamespace(args=(text,))])
    assert rolled[0] == pytest.approx(-text_nll(char_gpt.model, char_gpt.tokenizer, [text], window=48)[0][0])
    made = lm.generate_until([SimpleNamespace(args=("the sun", {"until": ["\n"], "max_gen_toks": 5}))])
    assert made == [generate(char_gpt.model, char_gpt.tokenizer, "the sun", 5, temperature=0.0, stop="\n")]
    (ll, greedy), = lm.loglikelihood([SimpleNamespace(args=("the sun", made[0][:1] or "x"))])
    assert ll < 0 and greedy is bool(made[0][:1])


@pytest.mark.slow  # a 2-step training and a harness subprocess: about 2 min on 2 loaded cores
def test_command_line_registers_the_model(tmp_path: Path, tasks: Path) -> None:
    """`python -m lmkit.evaluation.harness --model lmkit --model_args run=DIR` on a saved run."""
    from lmkit.api import train

    run = train(arch="gpt", tokenizer="char", layers=1, embed_dim=16, heads=2, seq_len=48, max_steps=2,
                batch_size=2, data=str(Path(__file__).parent / "fixtures" / "models" / "shakespeare_6k.txt"),
                out=str(tmp_path / "run"), reporters=[])
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "lmkit.evaluation.harness", "--model", "lmkit", "--model_args",
                           f"run={run.dir}", "--tasks", "lmkit_copa", "--include_path", str(tasks),
                           "--output_path", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "lmkit_copa" in done.stdout and "acc" in done.stdout
