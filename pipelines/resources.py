"""Locate the project's data directories (`schemas/`, `sql/`, `expectations/`).

In a source checkout (or an editable install) they sit at the top of the repository; in a
wheel they are shipped inside the package as `pipelines/_resources/`.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Return the directory holding the project's `name` data (e.g. "schemas", "sql")."""
    for candidate in (_PACKAGE_DIR.parent / name, _PACKAGE_DIR / "_resources" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"removal-audit resource directory {name!r} is missing")


def schemas_dir() -> Path:
    return resource_dir("schemas")


def expectations_dir() -> Path:
    return resource_dir("expectations")


def sql_dir() -> Path:
    return resource_dir("sql")
