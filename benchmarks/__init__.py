"""lmkit's speed benchmarks, run with `lmkit bench NAME [--quick]` (see `lmkit.bench`).

One module per benchmark (`gpt_char`, `lstm_classic`, `generate`, `startup`, `memory`), each with
``run(quick) -> Result``; PyTorch references in `torch_gpt` and `torch_lstm`; shared plumbing in
`_common` and the lmkit / plain-Keras contenders in `_contenders`.
"""
