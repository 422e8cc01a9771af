"""Where a measured job spends its time: py-spy samples of the running process (all its
threads), summarised as the functions holding the most samples, by own time and including
callees.

py-spy attaches to a running process from outside (it reads the interpreter's memory), so
the job runs unmodified; it needs ptrace rights on the process (root, or a child of the
caller with kernel.yama.ptrace_scope <= 1).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def attach(
    pid: int, out: Path, rate: int = 20, delay: float = 3.0, gil: bool = False
) -> Sampling | None:
    """Sample `pid` until it exits into `out` (collapsed stacks), starting after `delay`
    seconds (py-spy needs the interpreter up); None without py-spy. A low rate and
    --nonblocking (the process is never paused) keep the cost to the job small. `gil`:
    sample only the thread holding the GIL (for a job bound by it)."""
    tool = py_spy()
    if tool is None:
        return None
    argv = [tool, "record", "--pid", str(pid)]
    argv += ["--rate", str(rate), "--format", "raw", "--nonblocking", "-o", str(out)]
    if gil:
        argv.append("--gil")
    return Sampling(argv, delay, out.with_suffix(".log"))


class Sampling:
    """py-spy started on a thread after a delay; `wait` for its file."""

    def __init__(self, argv: list[str], delay: float, log: Path) -> None:
        self._argv, self._delay, self._log = argv, delay, log
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        time.sleep(self._delay)
        with self._log.open("wb") as log:  # py-spy's complaints, if it cannot attach
            self._process = subprocess.Popen(self._argv, stdout=log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._process is not None:
            self._process.wait(timeout)


def _name(frame: str) -> str:
    """'fn (path/to/module.py:12)' -> 'fn (module.py)'."""
    if " (" not in frame:
        return frame or "?"
    fn, _, where = frame.partition(" (")
    module = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{fn} ({module})"


IDLE = ("Condition.wait", "Thread._wait_for_tstate_lock", "Event.wait", "_worker (thread.py)")


PROJECT = ("pipelines/", "connectors/", "<avro_flat")


def summarise(raw: Path, top: int = 15) -> str:
    """The busiest functions of a py-spy raw file: by own time, and the project's own
    functions including what they call (idle waits left out of the shares)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        leaf = _name(frames[-1])
        if any(leaf.startswith(i) for i in IDLE):
            continue
        n = int(count)
        busy += n
        own[leaf] += n
        for name in {_name(f) for f in frames if any(p in f for p in PROJECT)}:
            inclusive[name] += n
    if not busy:
        return "(no busy samples)"
    lines = [f"{busy} busy samples (all threads)", "", "own time:"]
    lines += [f"  {100 * n / busy:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "the project's functions, including what they call:"]
    lines += [f"  {100 * n / busy:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1])))
