"""Adapters: small trained weights beside a frozen model (LoRA), and their files.

`lora.py`: the LoRA parameter group of the one training step and what it can adapt;
`peft_format.py`: adapters in the layout Hugging Face `peft` reads and writes, and merging.
"""
