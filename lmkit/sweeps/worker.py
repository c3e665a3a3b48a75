"""``python -m lmkit.sweeps.worker OUT/sweep.json``: one more worker of a sweep (`lmkit.sweep`)."""

import sys

from lmkit.sweeps.study import run_worker

if __name__ == "__main__":
    run_worker(sys.argv[1])
