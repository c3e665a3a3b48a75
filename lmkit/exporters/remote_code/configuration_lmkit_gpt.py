"""The configuration of an lmkit `gpt` model exported with its options (written by
``lmkit export``; loaded by ``AutoConfig.from_pretrained(folder, trust_remote_code=True)``).

Field names follow ``GPT2Config`` where GPT-2 has the same setting; the rest are lmkit's
`gpt` options under their lmkit names.
"""

from transformers import PretrainedConfig


class LmkitGPTConfig(PretrainedConfig):
    """Sizes and options of an lmkit `gpt`: pre-norm blocks of causal self-attention and an MLP,
    a head tied to the token embedding (or not), with lmkit's options:

    - ``rotary``: rotary positions (RoFormer, half-split pairs, base 10000) instead of learned ones;
    - ``qk_norm``: queries and keys divided by their root mean square per head (no scale, eps 1e-6);
    - ``mlp``: ``"gelu"`` (tanh approximation) or ``"relu2"`` (``relu(h) ** 2``);
    - ``norm``: ``"layernorm"`` or ``"rmsnorm"`` (a scale, no centring, no bias);
    - ``head_bias``: a learned bias added to the logits;
    - ``logit_softcap``: logits squashed to ``cap * tanh(logits / cap)`` (0: off).
    """

    model_type = "lmkit_gpt"
    attribute_map = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer",
                     "num_attention_heads": "n_head", "max_position_embeddings": "n_positions"}

    def __init__(self, vocab_size=65, n_positions=64, n_embd=128, n_layer=4, n_head=4,
                 dropout=0.0, layer_norm_epsilon=1e-5, rotary=False, qk_norm=False, mlp="gelu",
                 norm="layernorm", head_bias=True, logit_softcap=0.0, tie_word_embeddings=True,
                 use_cache=True, **kwargs):
        self.vocab_size, self.n_positions = vocab_size, n_positions
        self.n_embd, self.n_layer, self.n_head = n_embd, n_layer, n_head
        self.dropout, self.layer_norm_epsilon = dropout, layer_norm_epsilon
        self.rotary, self.qk_norm, self.mlp, self.norm = rotary, qk_norm, mlp, norm
        self.head_bias, self.logit_softcap = head_bias, logit_softcap
        self.use_cache = use_cache
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
