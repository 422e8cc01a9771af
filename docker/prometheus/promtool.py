#!/usr/bin/env python3
"""Find Prometheus' promtool, or install it into the user cache; print its path.

    python docker/prometheus/promtool.py [--no-install] [--force]

Looked for, in order:

1. $PROMTOOL, if set (it must run: a wrong path is an error, not a fallback);
2. `promtool` on PATH;
3. a copy in ${XDG_CACHE_HOME:-$HOME/.cache}/removal-audit/promtool/<version>/promtool;
4. otherwise installed there from the distribution's `prometheus` package, without
   installing the package: `apt-get download prometheus` into a temporary directory,
   `dpkg-deb -x`, copy usr/bin/promtool into the cache. No root needed, unless the
   package lists are missing: then, as root, `apt-get update` once and retry.

Every candidate must answer `promtool --version`. The path goes to stdout (nothing else
does), so `"$(python docker/prometheus/promtool.py)" test rules rules_test.yml` works.
Installs are atomic and serialised by a lock file, so concurrent callers download once.
Standard library only.

Exit codes: 0 path printed; 1 install failed; 2 cannot install here (no apt-get/dpkg-deb,
or package lists missing and not root), or $PROMTOOL does not run; 3 --no-install and no
promtool found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

PACKAGE = "prometheus"
BINARY_NAME = "promtool"
INSTALL_HINT = (
    "install promtool with `sudo apt-get install prometheus` (Debian/Ubuntu), or put a "
    "promtool from https://prometheus.io/download/ on PATH, or set PROMTOOL=/path/to/promtool"
)


class PromtoolUnavailable(RuntimeError):
    """promtool is not on this machine and could not be installed; `exit_code` says why."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def log(msg: str) -> None:
    print(f"[promtool] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "removal-audit" / "promtool"


def version_of(path: str | os.PathLike[str]) -> str | None:
    """First line of `promtool --version`, or None when it does not run."""
    try:
        proc = subprocess.run(
            [os.fspath(path), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    # promtool prints its version on stdout (older releases: stderr).
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return out[0] if out else ""


def cached_binaries() -> list[Path]:
    """Cached copies, most recently installed first."""
    root = cache_root()
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"*/{BINARY_NAME}") if p.is_file() and os.access(p, os.X_OK)]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


class _Lock:
    """Exclusive advisory lock on a file (POSIX fcntl; a no-op where unavailable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh: IO[str] | None = None

    def __enter__(self) -> _Lock:
        fh = open(self.path, "a+")  # held (and so locked) until __exit__
        self.fh = fh
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another install holding {self.path}")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fh = self.fh
        assert fh is not None
        fh.close()  # closing releases the lock


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    log("running: " + " ".join(cmd))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def _apt_download(workdir: Path) -> Path:
    """`apt-get download prometheus` into workdir; returns the .deb."""
    apt_get = shutil.which("apt-get")
    if not apt_get:
        raise PromtoolUnavailable(f"no promtool and no apt-get to fetch it: {INSTALL_HINT}", 2)
    is_root = getattr(os, "geteuid", lambda: -1)() == 0
    # As root apt drops to the _apt user to download, which cannot write to a private
    # temporary directory: it would fall back to root anyway, with a warning.
    sandbox = ["-o", "APT::Sandbox::User=root"] if is_root else []
    cmd = [apt_get, *sandbox, "download", PACKAGE]
    proc = _run(cmd, cwd=workdir)
    if proc.returncode != 0:
        if not is_root:
            raise PromtoolUnavailable(
                f"`apt-get download {PACKAGE}` failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()}\nThe package lists may be missing (`sudo apt-get "
                f"update`), or the package not available here: {INSTALL_HINT}",
                2,
            )
        log(f"download failed ({proc.stderr.strip()}); refreshing the package lists once")
        update = _run([apt_get, "update"])
        if update.returncode != 0:
            raise PromtoolUnavailable(
                f"`apt-get update` failed (exit {update.returncode}): {update.stderr.strip()}",
                1,
            )
        proc = _run(cmd, cwd=workdir)
        if proc.returncode != 0:
            raise PromtoolUnavailable(
                f"`apt-get download {PACKAGE}` failed after `apt-get update` "
                f"(exit {proc.returncode}): {proc.stderr.strip()}\n{INSTALL_HINT}",
                1,
            )
    debs = sorted(workdir.glob(f"{PACKAGE}_*.deb"))
    if len(debs) != 1:
        raise PromtoolUnavailable(f"expected one {PACKAGE}_*.deb in {workdir}, found {debs}", 1)
    return debs[0]


def install() -> Path:
    """Download the distribution's prometheus package and cache its promtool."""
    dpkg_deb = shutil.which("dpkg-deb")
    if not dpkg_deb:
        raise PromtoolUnavailable(f"no promtool and no dpkg-deb to unpack it: {INSTALL_HINT}", 2)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
        work = Path(tmp)
        deb = _apt_download(work)
        fields = _run([dpkg_deb, "--field", str(deb), "Version"])
        if fields.returncode != 0 or not fields.stdout.strip():
            raise PromtoolUnavailable(f"cannot read the version of {deb}: {fields.stderr}", 1)
        # Debian versions may carry an epoch ("1:2.42.0"): keep the directory name plain.
        version = fields.stdout.strip().replace(":", "_")
        extracted = work / "root"
        unpack = _run([dpkg_deb, "-x", str(deb), str(extracted)])
        if unpack.returncode != 0:
            raise PromtoolUnavailable(f"dpkg-deb -x {deb.name} failed: {unpack.stderr}", 1)
        built = extracted / "usr" / "bin" / BINARY_NAME
        if not built.is_file():
            raise PromtoolUnavailable(f"{deb.name} has no usr/bin/{BINARY_NAME}", 1)
        dest_dir = root / version
        dest_dir.mkdir(parents=True, exist_ok=True)
        staged = dest_dir / f".{BINARY_NAME}.partial"
        shutil.copy2(built, staged)
        staged.chmod(0o755)
        if version_of(staged) is None:
            staged.unlink()
            raise PromtoolUnavailable(f"{BINARY_NAME} from {deb.name} does not run here", 1)
        target = dest_dir / BINARY_NAME
        os.replace(staged, target)
    log(f"installed {target} from {deb.name} in {time.monotonic() - t0:.1f}s")
    return target


def locate(*, install_missing: bool = True, force: bool = False) -> Path:
    """Path of a promtool that runs, installing it into the user cache when missing.

    Raises PromtoolUnavailable when there is none and it cannot be installed."""
    explicit = os.environ.get("PROMTOOL")
    if explicit:
        if version_of(explicit) is None:
            raise PromtoolUnavailable(f"PROMTOOL={explicit} does not run (`--version`)", 2)
        return Path(explicit)
    if not force:
        on_path = shutil.which(BINARY_NAME)
        if on_path and version_of(on_path) is not None:
            return Path(on_path)
        for cached in cached_binaries():
            if version_of(cached) is not None:
                return cached
    if not install_missing:
        raise PromtoolUnavailable(f"no promtool on PATH or in {cache_root()}", 3)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _Lock(root / ".install.lock"):
        # Another process may have installed it while we waited for the lock.
        if not force:
            for cached in cached_binaries():
                if version_of(cached) is not None:
                    return cached
        log(f"no promtool found; installing it from the `{PACKAGE}` package into {root}")
        return install()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--no-install", action="store_true", help="only look; exit 3 if there is no promtool"
    )
    p.add_argument(
        "--force", action="store_true", help="install into the cache even if one is found"
    )
    args = p.parse_args(argv)
    try:
        path = locate(install_missing=not args.no_install, force=args.force)
    except PromtoolUnavailable as e:
        log(str(e))
        return e.exit_code
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
