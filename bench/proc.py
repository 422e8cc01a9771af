"""Measured subprocesses: wall time and the peak resident memory of a whole process tree.

A benchmarked command runs in its own process group; a sampler thread sums the resident
set (VmRSS, from /proc) of every process in the group every `interval` seconds and keeps
the peak, so a job that starts a runner (Prism, a Go binary) is measured with it. It also
keeps each process's CPU time (user + system, from /proc/<pid>/stat) as last seen, by
command name: how many cores the job kept busy, and which of its processes did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) == pgid:
                pids.append(int(entry))
        except (ProcessLookupError, PermissionError):
            continue
    return pids


def group_rss(pgid: int) -> int:
    """Sum of VmRSS over the processes of process group `pgid`."""
    return sum(_rss_bytes(pid) for pid in _group(pgid))


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> tuple[str, float] | None:
    """(command name, CPU seconds so far) of a process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return name, (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


@dataclass
class RssSampler:
    """Samples a process group's resident memory in the background."""

    pgid: int
    interval: float = 0.2
    peak: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> last seen
    peak_by_name: dict[str, int] = field(default_factory=dict)  # summed per sample
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            by_name: dict[str, int] = {}
            for pid in _group(self.pgid):
                if (seen := _cpu(pid)) is not None:
                    self.cpu[pid] = seen
                    by_name[seen[0]] = by_name.get(seen[0], 0) + _rss_bytes(pid)
            for name, size in by_name.items():
                self.peak_by_name[name] = max(self.peak_by_name.get(name, 0), size)
            rss = sum(by_name.values())
            self.samples.append((time.monotonic() - started, rss))
            self.peak = max(self.peak, rss)
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peak

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds by command name (up to the last sample of each process)."""
        out: dict[str, float] = {}
        for name, seconds in self.cpu.values():
            out[name] = out.get(name, 0.0) + seconds
        return dict(sorted(out.items(), key=lambda item: -item[1]))


@dataclass(frozen=True)
class Measured:
    returncode: int
    seconds: float
    peak_rss: int
    output: str
    samples: list[tuple[float, int]]  # (seconds since start, group RSS bytes)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # by command name
    peak_rss_by_name: dict[str, int] = field(default_factory=dict)  # each command's own peak

    def failure(self, what: str, tail: int = 2000) -> str:
        """Why `what` failed: how it ended (a signal by name: SIGKILL from the kernel's
        out-of-memory killer leaves no trace in the output), its peak RSS and the output's
        tail.

        Example: Measured(-9, 1.0, 2**30, "", []).failure("job").startswith(
            "job was killed by SIGKILL")
        """
        if self.returncode < 0:
            ended = f"was killed by {signal.Signals(-self.returncode).name}"
        else:
            ended = f"exited with status {self.returncode}"
        return (
            f"{what} {ended} after {self.seconds:.0f} s, peak RSS {self.peak_rss / 2**30:.2f} GiB; "
            f"output ends:\n{self.output[-tail:]}"
        )


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log: Path,
    timeout: float,
    on_start: Callable[[int], object] | None = None,
) -> Measured:
    """Run `argv` in its own process group until it exits (or `timeout`, then kill it and
    raise TimeoutError); wall time and the group's peak RSS. Output goes to `log`;
    `on_start(pid)` is called once it runs (to attach a profiler)."""
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        sampler = RssSampler(process.pid).start()
        if on_start is not None:
            on_start(process.pid)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as late:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise TimeoutError(
                f"{argv[0]}... did not finish in {timeout:.0f} s (log: {log})"
            ) from late
        finally:
            peak = sampler.stop()
        seconds = time.perf_counter() - started
    output = log.read_text(errors="replace")
    return Measured(
        code, seconds, peak, output, sampler.samples, sampler.cpu_seconds(), sampler.peak_by_name
    )
