#!/usr/bin/env python3
"""Build Apache Beam's Prism runner from Go source into the user cache, print its path.

    python docker/prism/build.py [--beam-version 2.77.0] [--force] [--no-build]

Beam's PrismRunner normally downloads a prebuilt Prism zip from the project's GitHub
releases; that download is not possible where only package registries are reachable.
This script instead runs

    go install github.com/apache/beam/sdks/v2/go/cmd/prism@v<beam version>

(the Go module proxy serves every Beam release tag) into

    ${XDG_CACHE_HOME:-$HOME/.cache}/removal-audit/prism/<beam version>/prism

and prints that path on stdout (nothing else goes to stdout), so that

    --runner=PrismRunner --prism_location="$(python docker/prism/build.py)"

runs a pipeline on a Prism matching the installed SDK. A binary already in the cache is
reused without invoking Go. The build is atomic (GOBIN is a temporary directory in the
cache, renamed into place) and serialised by a lock file, so concurrent callers (e.g.
pytest-xdist workers) build it once. Standard library only; needs `go` (>= the version
Beam's go.mod asks for) on PATH, or GO=/path/to/go.

Exit codes: 0 path printed; 1 build failed; 2 usage / Go missing / version unknown;
3 --no-build and the binary is not cached.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRISM_PKG = "github.com/apache/beam/sdks/v2/go/cmd/prism"
BINARY_NAME = "prism.exe" if os.name == "nt" else "prism"


def log(msg: str) -> None:
    print(f"[prism-build] {msg}", file=sys.stderr, flush=True)


REPO_ROOT = Path(__file__).resolve().parents[2]


def installed_beam_version() -> tuple[str, str] | None:
    """(version, where) of the apache-beam the project runs with, without importing
    apache_beam (slow and noisy). Looked for in this interpreter, then in the project's
    .venv (so plain `python3 docker/prism/build.py` works), then pyproject's ==pin."""
    from importlib import metadata

    try:
        return metadata.version("apache-beam"), sys.executable
    except metadata.PackageNotFoundError:
        pass
    venv = REPO_ROOT / ".venv"
    for site in [*sorted(venv.glob("lib/python*/site-packages")), venv / "Lib" / "site-packages"]:
        for dist in metadata.distributions(path=[str(site)]):
            if (dist.metadata["Name"] or "").lower().replace("_", "-") == "apache-beam":
                return dist.version, str(site)
    pyproject = REPO_ROOT / "pyproject.toml"
    if pyproject.is_file():
        m = re.search(r"[\"']apache[-_]beam==([^\"';,\s]+)", pyproject.read_text())
        if m:
            return m.group(1), str(pyproject)
    return None


def go_module_version(beam_version: str) -> str:
    """Map a Python SDK version to the Go module version of the same release.

    2.77.0 -> v2.77.0; 2.66.0rc2 -> v2.66.0-RC2 (Beam tags RCs as sdks/v2.66.0-RC2).
    Development versions (2.78.0.dev0) have no tag: pass a release explicitly."""
    v = beam_version.strip().removeprefix("v")
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:-?rc(\d+))?", v, flags=re.IGNORECASE)
    if not m:
        raise ValueError(
            f"cannot map Beam version {beam_version!r} to a Go module version "
            "(expected X.Y.Z or X.Y.ZrcN; .dev versions have no release tag)"
        )
    major, minor, patch, rc = m.groups()
    base = f"v{major}.{minor}.{patch}"
    return f"{base}-RC{rc}" if rc else base


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "removal-audit" / "prism"


def is_usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


class _Lock:
    """Exclusive advisory lock on a file (POSIX fcntl; a no-op where unavailable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = None

    def __enter__(self) -> _Lock:
        self.fh = open(self.path, "a+")  # held (and so locked) until __exit__
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build holding {self.path}")
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.fh is not None
        self.fh.close()  # closing releases the lock


def build(go: str, module_version: str, dest_dir: Path, extra_flags: list[str]) -> Path:
    target = dest_dir / BINARY_NAME
    with tempfile.TemporaryDirectory(prefix=".gobin-", dir=dest_dir) as gobin:
        env = dict(os.environ)
        env["GOBIN"] = gobin
        # `go install pkg@version` ignores any enclosing go.mod, but a caller's
        # GOFLAGS (e.g. -mod=vendor) could break it: use only -buildvcs=false.
        env["GOFLAGS"] = "-buildvcs=false"
        cmd = [go, "install", *extra_flags, f"{PRISM_PKG}@{module_version}"]
        log(f"running: {' '.join(cmd)}  (GOBIN={gobin})")
        log("a cold build downloads ~1 GB of modules and takes minutes on 2 cores")
        t0 = time.monotonic()
        proc = subprocess.run(cmd, env=env, cwd=dest_dir, check=False)
        elapsed = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"go install failed (exit {proc.returncode}) after {elapsed:.0f}s")
        built = Path(gobin) / BINARY_NAME
        if not built.is_file():
            raise RuntimeError(f"go install succeeded but {built} is missing")
        os.replace(built, target)
    log(f"built {target} in {elapsed:.0f}s ({target.stat().st_size / 2**20:.1f} MiB)")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--beam-version",
        help="Beam release to build, e.g. 2.77.0 (default: the installed apache-beam)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument(
        "--no-build",
        action="store_true",
        help="only print the cached path; exit 3 if it is not built yet",
    )
    p.add_argument(
        "--strip",
        action="store_true",
        help="link with -s -w (smaller binary, no DWARF); applies only when building",
    )
    args = p.parse_args(argv)

    beam_version, where = args.beam_version, "--beam-version"
    if not beam_version:
        found = installed_beam_version()
        if not found:
            log("no apache-beam in this interpreter, .venv or pyproject; pass --beam-version")
            return 2
        beam_version, where = found
    beam_version = beam_version.removeprefix("v")
    try:
        module_version = go_module_version(beam_version)
    except ValueError as e:
        log(str(e))
        return 2

    dest_dir = cache_root() / beam_version
    target = dest_dir / BINARY_NAME

    if is_usable(target) and not args.force:
        print(target)
        return 0
    if args.no_build:
        log(f"not built yet: {target}")
        return 3

    go = os.environ.get("GO") or shutil.which("go")
    if not go:
        log("`go` not found on PATH (set GO=/path/to/go); cannot build Prism")
        return 2

    dest_dir.mkdir(parents=True, exist_ok=True)
    with _Lock(dest_dir / ".build.lock"):
        # Another process may have finished the build while we waited for the lock.
        if is_usable(target) and not args.force:
            print(target)
            return 0
        log(f"building Prism {module_version} for apache-beam {beam_version} (from {where})")
        flags = ["-ldflags=-s -w"] if args.strip else []
        try:
            build(go, module_version, dest_dir, flags)
        except RuntimeError as e:
            log(str(e))
            return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
