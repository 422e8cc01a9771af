"""The schema catalog: every version of every subject, found by fingerprint or registry id.

In: a catalog directory (catalog.json plus the .avsc files it lists): the packaged
`schemas/`, or a site catalog (settings.schemas_dir) that knows versions producers already
write. Out: `SchemaVersion`s. Every version is a possible writer schema, looked up by the
8-byte CRC-64-AVRO fingerprint that single-object encoding carries, or by the registry id
the Confluent wire format carries. Each subject has one reader schema, the version the
pipeline decodes into: its last version, unless catalog.json pins an older one
("readers": {"removal.requests-value": 2}), as a catalog does that registers a producer's
newer version before the pipeline is upgraded to read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from fastavro import parse_schema
from fastavro.schema import SchemaParseException, fingerprint, to_parsing_canonical_form
from fastavro.types import Schema

from pipelines.resources import schemas_dir

CATALOG_FILE = "catalog.json"
FINGERPRINT_SIZE = 8
# The Confluent wire format stores the id as a signed 32-bit big-endian int.
_MAX_REGISTRY_ID = 2**31 - 1


class SchemaCatalogError(ValueError):
    """A catalog that cannot be used: missing or invalid files, clashing versions, a bad
    reader pin. The message names the file."""


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one subject's schema.

    `schema` is the fastavro-parsed schema (left out of ==/hash: the canonical form and
    fingerprint identify it). `fingerprint` is the CRC-64-AVRO of `canonical_form` (the
    Parsing Canonical Form), little-endian, as single-object encoding writes it.
    """

    subject: str
    version: int
    registry_id: int | None
    schema: Schema = field(compare=False, repr=False)
    canonical_form: str = field(repr=False)
    fingerprint: bytes

    @property
    def label(self) -> str:
        """Human-readable name for messages, e.g. "removal.requests-value v2"."""
        return f"{self.subject} v{self.version}"


class SchemaStore:
    """All schema versions of the catalog; build it with `SchemaStore.load`."""

    def __init__(
        self,
        versions: Mapping[str, tuple[SchemaVersion, ...]],
        readers: Mapping[str, int] | None = None,
    ) -> None:
        """Index `versions` (subject -> versions, oldest first) and the reader pins
        (subject -> version; unpinned subjects read with their last version).
        SchemaCatalogError on clashes, or on a pin naming an unknown subject or version."""
        self._subjects: dict[str, tuple[SchemaVersion, ...]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._by_registry_id: dict[int, SchemaVersion] = {}
        for subject, subject_versions in versions.items():
            if not subject_versions:
                raise SchemaCatalogError(f"subject {subject!r} has no schema versions")
            numbers = [v.version for v in subject_versions]
            if numbers != sorted(set(numbers)):
                raise SchemaCatalogError(
                    f"subject {subject!r}: versions must be unique and oldest first, got {numbers}"
                )
            for sv in subject_versions:
                if sv.subject != subject:
                    raise SchemaCatalogError(f"{sv.label} listed under subject {subject!r}")
                self._index(sv)
            self._subjects[subject] = tuple(subject_versions)
        self._readers: dict[str, SchemaVersion] = {}
        for subject, pinned in (readers or {}).items():
            if subject not in self._subjects:
                raise SchemaCatalogError(f"reader pinned for unknown subject {subject!r}")
            found = [sv for sv in self._subjects[subject] if sv.version == pinned]
            if not found:
                raise SchemaCatalogError(
                    f"reader of {subject!r} pinned to v{pinned}, which it lacks"
                )
            self._readers[subject] = found[0]

    def _index(self, sv: SchemaVersion) -> None:
        # Two versions with one fingerprint (or id) would make the writer schema of a
        # message ambiguous, so the catalog is refused rather than one silently winning.
        other = self._by_fingerprint.get(sv.fingerprint)
        if other is not None:
            raise SchemaCatalogError(
                f"{sv.label} and {other.label} have the same fingerprint "
                f"{sv.fingerprint.hex()} (identical canonical forms)"
            )
        self._by_fingerprint[sv.fingerprint] = sv
        if sv.registry_id is not None:
            other = self._by_registry_id.get(sv.registry_id)
            if other is not None:
                raise SchemaCatalogError(
                    f"{sv.label} and {other.label} share registry id {sv.registry_id}"
                )
            self._by_registry_id[sv.registry_id] = sv

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaStore:
        """Read `directory`/catalog.json (default: the project's schemas directory).

        Each listed .avsc file is parsed once. Raises SchemaCatalogError (a ValueError)
        naming the file when the catalog or a schema is missing or invalid, when versions
        clash, or when a reader pin is malformed or names a version the catalog lacks.
        """
        root = schemas_dir() if directory is None else directory
        catalog = _read_json(root / CATALOG_FILE)
        subjects = catalog.get("subjects") if isinstance(catalog, dict) else None
        if not isinstance(subjects, dict):
            raise SchemaCatalogError(f"{root / CATALOG_FILE}: expected an object with 'subjects'")
        parsed: dict[Path, tuple[Schema, str]] = {}
        versions: dict[str, tuple[SchemaVersion, ...]] = {}
        for subject, entries in subjects.items():
            if not isinstance(entries, list):
                raise SchemaCatalogError(
                    f"{root / CATALOG_FILE}: subject {subject!r} is not a list"
                )
            versions[subject] = tuple(
                _version_from_entry(root, subject, entry, parsed) for entry in entries
            )
        readers = catalog.get("readers", {})
        if not isinstance(readers, dict) or not all(_is_int(v) for v in readers.values()):
            raise SchemaCatalogError(
                f"{root / CATALOG_FILE}: 'readers' must map subjects to version numbers, "
                f"got {readers!r}"
            )
        try:
            return cls(versions, readers)
        except SchemaCatalogError as e:
            raise SchemaCatalogError(f"{root / CATALOG_FILE}: {e}") from e

    def subjects(self) -> tuple[str, ...]:
        """Subject names, in catalog order."""
        return tuple(self._subjects)

    def versions(self, subject: str) -> tuple[SchemaVersion, ...]:
        """All versions of `subject`, oldest first; KeyError for an unknown subject."""
        try:
            return self._subjects[subject]
        except KeyError:
            raise KeyError(
                f"unknown schema subject {subject!r}; known: {', '.join(self._subjects)}"
            ) from None

    def latest(self, subject: str) -> SchemaVersion:
        """The newest version of `subject` (the last listed); KeyError if unknown. It is
        the reader unless the catalog pins an older one: decode with `reader`."""
        return self.versions(subject)[-1]

    def reader(self, subject: str) -> SchemaVersion:
        """The version `subject`'s records are decoded into: the catalog's pin, else the
        newest; KeyError if unknown. Example: reader("removal.requests-value").version == 2
        in a catalog that lists v3 and pins v2."""
        return self._readers.get(subject) or self.latest(subject)

    def version(self, subject: str, n: int) -> SchemaVersion:
        """Version `n` of `subject`; KeyError if either is unknown."""
        for sv in self.versions(subject):
            if sv.version == n:
                return sv
        raise KeyError(f"subject {subject!r} has no version {n}")

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        """The version whose 8-byte wire fingerprint is `fp`, or None."""
        return self._by_fingerprint.get(bytes(fp))

    def by_registry_id(self, i: int) -> SchemaVersion | None:
        """The version registered under Confluent schema id `i`, or None."""
        return self._by_registry_id.get(i)


def schema_fingerprint(canonical_form: str) -> bytes:
    """CRC-64-AVRO of a Parsing Canonical Form, as the 8 little-endian wire bytes."""
    # fastavro returns the hex of the little-endian bytes (its own comment says so; the
    # tests check it against the spec's algorithm).
    return bytes.fromhex(fingerprint(canonical_form, "CRC-64-AVRO"))


def _version_from_entry(
    root: Path, subject: str, entry: Any, parsed: dict[Path, tuple[Schema, str]]
) -> SchemaVersion:
    where = f"{root / CATALOG_FILE}: subject {subject!r}"
    if not isinstance(entry, dict):
        raise SchemaCatalogError(f"{where}: entry {entry!r} is not an object")
    version, registry_id, file = entry.get("version"), entry.get("registry_id"), entry.get("file")
    if not _is_int(version) or version < 1:
        raise SchemaCatalogError(f"{where}: bad version {version!r}")
    if registry_id is not None and (
        not _is_int(registry_id) or not 0 <= registry_id <= _MAX_REGISTRY_ID
    ):
        raise SchemaCatalogError(f"{where} v{version}: bad registry_id {registry_id!r}")
    if not isinstance(file, str) or not file:
        raise SchemaCatalogError(f"{where} v{version}: bad file {file!r}")
    path = root / file
    if path not in parsed:
        parsed[path] = _parse_schema_file(path)
    schema, canonical = parsed[path]
    return SchemaVersion(
        subject=subject,
        version=version,
        registry_id=registry_id,
        schema=schema,
        canonical_form=canonical,
        fingerprint=schema_fingerprint(canonical),
    )


def _parse_schema_file(path: Path) -> tuple[Schema, str]:
    raw = _read_json(path)
    try:
        # A fresh named-types table per file: v1 and v2 both define the same record names.
        schema = parse_schema(raw, named_schemas={})
        canonical = to_parsing_canonical_form(schema)
    except (SchemaParseException, ValueError, TypeError, KeyError, AttributeError) as e:
        raise SchemaCatalogError(f"{path}: invalid Avro schema: {e}") from e
    return schema, canonical


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SchemaCatalogError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaCatalogError(f"{path}: invalid JSON: {e}") from e


def _is_int(value: object) -> TypeGuard[int]:
    # JSON true/false arrive as bool, which is an int subclass.
    return isinstance(value, int) and not isinstance(value, bool)
