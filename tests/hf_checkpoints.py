"""Tiny Hugging Face checkpoints made by `transformers` itself (random init), for the pretrained
tests: a BERT with a WordPiece tokenizer and a GPT-2 with a byte-level BPE, both trained here."""

from __future__ import annotations

from pathlib import Path

TEXT = [
    "the cat sat on the mat and the dog sat on the log",
    "a quick brown fox jumps over the lazy dog near the river bank",
    "good movies make people happy while bad movies make people sad",
    "first citizen: before we proceed any further, hear me speak.",
    "all: speak, speak. you are all resolved rather to die than to famish?",
] * 4


def wordpiece_tokenizer():
    """An uncased WordPiece tokenizer (HF `tokenizers`) with BERT's [CLS] a [SEP] b [SEP]."""
    from tokenizers import BertWordPieceTokenizer
    from tokenizers.processors import TemplateProcessing

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(TEXT, vocab_size=120, show_progress=False)
    # [CLS] a [SEP] b [SEP] (set only for a vocabulary given up front, so after training here)
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    return tok


def bert_folder(folder: Path, *, max_shard_size: str | None = None) -> Path:
    """A 2-layer BertModel (hidden 32) with its tokenizer.json, saved as safetensors."""
    import torch
    import transformers

    tok = wordpiece_tokenizer()
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=48, max_position_embeddings=64)
    model = transformers.BertModel(config).eval()
    extra = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, safe_serialization=True, **extra)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def gpt2_folder(folder: Path, positions: int = 64) -> Path:
    """A 2-layer GPT2LMHeadModel (hidden 32, `positions` positions) with a byte-level BPE tokenizer.json."""
    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(TEXT, vocab_size=300, show_progress=False)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=positions, n_embd=32,
                                     n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def byte_bpe_tokenizer():
    """A byte-level BPE tokenizer (HF `tokenizers`, 300 ids) trained on `TEXT`."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(TEXT, vocab_size=300, show_progress=False)
    return tok


def decoder_folder(folder: Path, model_type: str, *, max_shard_size: str | None = None,
                   **options) -> Path:
    """A tiny random ``*ForCausalLM`` of `model_type` (``llama``, ``mistral``, ``qwen2``; 2 layers,
    hidden 32, 4 query heads) made by `transformers` in float32, with a byte-level BPE
    tokenizer.json; `options` are config fields (``num_key_value_heads``, ``rope_scaling``...)."""
    import torch
    import transformers

    tok = byte_bpe_tokenizer()
    fields = dict(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                  max_position_embeddings=64,
                  bos_token_id=0, eos_token_id=0,
                  initializer_range=0.1)  # larger than 0.02: options change the logits more
    config = transformers.AutoConfig.for_model(model_type, **{**fields, **options})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
    with torch.no_grad():  # random biases and norms: zeros and ones would hide a missed one
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    extra = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, safe_serialization=True, **extra)
    tok.save(str(folder / "tokenizer.json"))
    return folder
