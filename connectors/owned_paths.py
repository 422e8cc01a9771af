"""Names of files and directories a process makes for itself, and the removal of those
whose process has died.

A process killed by a signal runs no cleanup, so what it made for the time of one call
(the auditor's pinning links, its spill directory) would stay for good. Each such name
carries the maker's PID; whoever makes the next one first removes those whose PID is no
longer running.

Example: owned_name(".audit.duckdb.reader-") -> ".audit.duckdb.reader-4242-9f1c2a7b"
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path


def owned_name(prefix: str) -> str:
    return f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True


def remove_dead_owners(parent: Path, prefix: str) -> list[Path]:
    """Remove the entries `<prefix><pid>-...` of `parent` whose process is not running;
    return them. An entry whose PID was reused by a live process stays until that process
    ends, and one whose name does not say its owner (`<prefix>` and no `<pid>-`) is never
    removed: it may belong to a process of an older version, still running."""
    removed: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in sorted(parent.iterdir()):
            if not entry.name.startswith(prefix):
                continue
            pid, sep, _ = entry.name[len(prefix) :].partition("-")
            if not sep or not pid.isdigit() or _running(int(pid)):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry)
    return removed
