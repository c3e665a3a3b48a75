"""``python -m lmkit.cli``: the `lmkit` command."""

import sys

from lmkit.cli import main

sys.exit(main())
