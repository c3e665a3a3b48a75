"""lmkit's speed benchmarks: ``python -m benchmarks NAME [--quick]`` from the checkout's root.

`lmkit bench NAME` runs the same command for the checkout an editable lmkit is installed from
(`lmkit.cli.bench`). One module per benchmark (`gpt_char`, `lstm_classic`, `generate`, `startup`,
`memory`), each with ``run(quick) -> Result``; the runner in `__main__`; PyTorch references in
`torch_gpt` and `torch_lstm`; shared plumbing in `_common` and the lmkit / plain-Keras
contenders in `_contenders`.
"""
