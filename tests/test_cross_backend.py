"""Models are backend-agnostic: weights saved under JAX give the same logits under torch.

Every registered architecture is built and saved here (JAX); one subprocess with
``KERAS_BACKEND=torch`` loads all of them and computes logits on the same tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from tiny_models import VOCAB, tiny

from lmkit.registry import architectures

ARCHS = [e.name for e in architectures.list() if not e.has("encoder")]  # language models

TORCH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    from lmkit.registry import architectures
    assert keras.backend.backend() == "torch", keras.backend.backend()
    folder, names = sys.argv[1], json.loads(sys.argv[2])
    x = np.load(f"{folder}/tokens.npy")
    for name in names:
        architectures.get(name)  # imports the module (built-in or plugin) that defines the class
        model = keras.saving.load_model(f"{folder}/{name}.keras", safe_mode=True)
        np.save(f"{folder}/{name}.torch.npy", keras.ops.convert_to_numpy(model(x)))
        state = model.init_state(x.shape[0])
        if state is not None:  # incremental decoding: a prompt of 4 tokens, then the rest
            first, state = model.decode(x[:, :4], state)
            rest, _ = model.decode(x[:, 4:], state)
            decoded = keras.ops.concatenate([first, rest], axis=1)
            np.save(f"{folder}/{name}.torch_decode.npy", keras.ops.convert_to_numpy(decoded))
    """
)


@pytest.fixture(scope="module")
def torch_logits(tmp_path_factory):
    """Save every architecture under JAX, reload under torch.

    Returns {name: (JAX logits, torch logits, path of torch's decoded logits if it has state)}.
    """
    folder = tmp_path_factory.mktemp("cross_backend")
    x = np.random.default_rng(0).integers(0, VOCAB, size=(2, 9)).astype("int32")
    np.save(folder / "tokens.npy", x)
    jax_logits = {}
    for name in ARCHS:
        keras.utils.set_random_seed(1)
        model = tiny(name)
        jax_logits[name] = np.asarray(keras.ops.convert_to_numpy(model(x)))
        model.save(folder / f"{name}.keras")
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run(
        [sys.executable, "-c", TORCH_SCRIPT, str(folder), json.dumps(ARCHS)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"torch subprocess failed:\n{done.stderr[-3000:]}"
    return {name: (jax_logits[name], np.load(folder / f"{name}.torch.npy"),
                   folder / f"{name}.torch_decode.npy") for name in ARCHS}


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHS)
def test_torch_backend_gives_the_same_logits_as_jax(name, torch_logits):
    jax_logits, torch_result, _ = torch_logits[name]
    assert torch_result.shape == jax_logits.shape == (2, 9, VOCAB)
    np.testing.assert_allclose(torch_result, jax_logits, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHS)
def test_torch_backend_decodes_like_the_full_forward_pass(name, torch_logits):
    jax_logits, _, decoded_path = torch_logits[name]
    if tiny(name).init_state(2) is None:
        assert not decoded_path.exists()   # stateless: generation recomputes the context
        return
    np.testing.assert_allclose(np.load(decoded_path), jax_logits, atol=1e-4, rtol=0)
