"""`lmkit train --processes N`: N processes of one distributed training on this machine.

Each process is ``python -m lmkit.cli train ...`` with the same arguments and the environment
`lmkit.distribute.initialize` reads (coordinator ``127.0.0.1:<free port>``, process count and
id); JAX's distributed runtime joins them. Process 0's output is this command's output; the
others' error output is kept and shown if they fail. When one process fails, the others are
stopped (SIGTERM, then SIGKILL after `GRACE_S` seconds), so a dead peer never leaves the rest
waiting in a collective: the command ends with that process's status and a message naming it.

On a cluster, start one process per host (or per accelerator) with the same three variables
set by the scheduler instead, or with ``LMKIT_DISTRIBUTED=auto`` (docs/scaling.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmkit.api import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID

__all__ = ["launch", "without_processes", "GRACE_S"]

#: seconds the other processes get to stop after SIGTERM before they are killed
GRACE_S = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ended(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every running process, then SIGKILL those still running after `GRACE_S`."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for p in running:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def without_processes(argv: list[str]) -> list[str]:
    """`argv` as the user typed it, less its ``--processes N``: what each launched process runs.

    Taken from the command line itself, not rebuilt from the parsed options, so every option a
    command has (or gains) reaches the processes unchanged. An abbreviation argparse accepted
    (``--proc 2``, ``--processes=2``) is removed too: left in, each process would launch again.

    >>> without_processes(["train", "--processes", "2", "--out", "run"])
    ['train', '--out', 'run']
    """
    kept: list[str] = []
    rest = iter(argv)
    for arg in rest:
        name, has_value, _ = arg.partition("=")
        if len(name) > 2 and "--processes".startswith(name):
            if not has_value:
                next(rest, None)   # its value
            continue
        kept.append(arg)
    return kept


def launch(processes: int, argv: list[str], command: str = "train") -> int:
    """Run ``lmkit <argv>`` as `processes` processes of one distributed run; the exit status.

    0 when every process succeeded; else the status of the first process that failed (128 +
    signal number when it was killed), after stopping the others.
    """
    address = f"127.0.0.1:{_free_port()}"
    logs = tempfile.TemporaryDirectory(prefix="lmkit-launch-")
    procs: list[subprocess.Popen] = []
    files = []
    try:
        for index in range(processes):
            env = {**os.environ, ENV_COORDINATOR: address, ENV_NUM_PROCESSES: str(processes),
                   ENV_PROCESS_ID: str(index)}
            cmd = [sys.executable, "-m", "lmkit.cli", *argv]
            if index == 0:  # its progress and errors are this command's
                procs.append(subprocess.Popen(cmd, env=env))
                continue
            err = open(Path(logs.name) / f"{index}.err", "w+b")
            files.append(err)
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err))
        while True:
            failed = next(((i, p.returncode) for i, p in enumerate(procs)
                           if p.poll() is not None and p.returncode != 0), None)
            if failed is not None:
                index, code = failed
                _stop(procs)
                detail = ""
                if index > 0:
                    log = Path(logs.name) / f"{index}.err"
                    tail = log.read_bytes()[-2000:].decode(errors="replace").strip()
                    detail = f"\nits last output:\n{tail}" if tail else ""
                print(f"lmkit {command}: error: process {index} of {processes} {_ended(code)}; "
                      f"stopped the other processes.{detail}", file=sys.stderr)
                return code if code > 0 else 128 - code
            if all(p.poll() is not None for p in procs):
                return 0
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    finally:
        for f in files:
            f.close()
        logs.cleanup()
