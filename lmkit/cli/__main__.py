"""``python -m lmkit.cli``: the `lmkit` command."""

from lmkit.cli import run

run()
