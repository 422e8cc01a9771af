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
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def attach(pid: int, seconds: float, out: Path, rate: int = 50) -> subprocess.Popen[bytes] | None:
    """Start sampling `pid` for `seconds` into `out` (collapsed stacks); None without py-spy."""
    tool = py_spy()
    if tool is None:
        return None
    argv = [tool, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    argv += ["--rate", str(rate), "--format", "raw", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _name(frame: str) -> str:
    """'fn (path/to/module.py:12)' -> 'fn (module.py)'."""
    if " (" not in frame:
        return frame or "?"
    fn, _, where = frame.partition(" (")
    module = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{fn} ({module})"


IDLE = ("Condition.wait", "Thread._wait_for_tstate_lock", "Event.wait", "_worker (thread.py)")


def summarise(raw: Path, top: int = 15) -> str:
    """The busiest functions of a py-spy raw file (idle waits left out of the shares)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_name(f) for f in stack.split(";")]
        if any(frames[-1].startswith(i) for i in IDLE):
            continue
        n = int(count)
        busy += n
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    if not busy:
        return "(no busy samples)"
    lines = [f"{busy} busy samples", "", "own time:"]
    lines += [f"  {100 * n / busy:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "including callees:"]
    lines += [f"  {100 * n / busy:5.1f}%  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1])))
