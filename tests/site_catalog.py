"""A site schema catalog for tests: producers have moved to a newer request schema than
the pipeline reads. A copy of the packaged `schemas/` plus removal_request v3, which adds
a category symbol, registered but with the reader pinned to v2 (what the model knows).

Used through REMOVAL_AUDIT_SCHEMAS_DIR (settings.schemas_dir) by the poison matrix, and
directly by the unit tests of the pin.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipelines.resources import schemas_dir

REQUESTS_SUBJECT = "removal.requests-value"
NEW_CATEGORY = "ELECTION_INTEGRITY"  # a symbol v3 adds and pipelines.model.Category lacks
V3_FILE = "removal_request/v3.avsc"
V3_REGISTRY_ID = 5  # after the packaged catalog's ids (1-4)


def request_v3_schema() -> dict[str, Any]:
    """removal_request v2 with NEW_CATEGORY appended to its category enum."""
    schema: dict[str, Any] = json.loads(
        (schemas_dir() / "removal_request" / "v2.avsc").read_text(encoding="utf-8")
    )
    schema["doc"] = "Version 3 (test site catalog): v2 plus a category symbol."
    category = next(f for f in schema["fields"] if f["name"] == "category")
    category["type"]["symbols"].append(NEW_CATEGORY)
    return schema


def write_site_catalog(directory: Path, *, pin_reader: int | None = 2) -> Path:
    """Copy the packaged catalog to `directory` and register request v3 (registry id
    V3_REGISTRY_ID); `pin_reader`: the request reader version pinned in catalog.json (None:
    no pin, so v3 would be the reader). Returns `directory`."""
    shutil.copytree(schemas_dir(), directory)
    (directory / V3_FILE).write_text(json.dumps(request_v3_schema()), encoding="utf-8")
    catalog_path = directory / "catalog.json"
    catalog = json.loads(catalog_path.read_text(encoding="utf-8"))
    catalog["subjects"][REQUESTS_SUBJECT].append(
        {"version": 3, "registry_id": V3_REGISTRY_ID, "file": V3_FILE}
    )
    if pin_reader is not None:
        catalog["readers"] = {REQUESTS_SUBJECT: pin_reader}
    catalog_path.write_text(json.dumps(catalog, indent=2), encoding="utf-8")
    return directory
