"""``python -m lmkit.config > table.md``: the README's table of training config keys."""

import sys

from lmkit.config.train_config import config_table

sys.stdout.write(config_table() + "\n")
