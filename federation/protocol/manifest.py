"""The manifest of a bundle: which files it holds, their SHA-256 and size, and small metadata.

A manifest's JSON form, stored as ``MANIFEST.json`` inside the bundle, is exactly the canonical
JSON (see `federation.jsonio`) of::

    {"files": {"<arcname>": {"sha256": "<64 lowercase hex>", "size": <bytes>}, ...},
     "format": "federation.bundle-manifest/1", "metadata": {...}}

The manifest digest is the SHA-256 hex of those bytes: the coordinator signs it in the task
envelope. A manifest not in canonical form is refused, so one manifest has exactly one digest.

The workflow digest covers the pipeline files only (every entry but ``study.yaml``), not the
study config or metadata: a node admin approves a pipeline version once, in an allow-list,
and it stays approved across studies. It is the SHA-256 hex of the canonical JSON of
``{"files": {<pipeline entries as above>}, "format": "federation.workflow/1"}``.

Bundle paths ("arcnames") are plain relative POSIX paths, checked by `name_problem`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from federation.errors import BundleError
from federation.jsonio import canonical_json, parse_json_strictly

MANIFEST_NAME = "MANIFEST.json"  # reserved: no bundled file may use it
MANIFEST_FORMAT = "federation.bundle-manifest/1"  # bump when the manifest changes meaning
WORKFLOW_FORMAT = "federation.workflow/1"  # a workflow digest never equals a manifest digest
STUDY_CONFIG_NAME = "study.yaml"  # the study config inside a bundle; not part of the workflow
# Plain names only: no spaces, quotes, shell or glob characters, no hidden files, nothing that
# Unicode normalisation or a Windows file system could turn into another name.
NAME_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
DRIVE_LETTER = re.compile(r"[A-Za-z]:")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_NAME_CHARS = 255  # the pipeline's longest path is ~40 characters
MAX_NAME_DEPTH = 8  # the pipeline is three levels deep at most (config/schema/x.json)
MAX_SHOWN_NAME_CHARS = 80  # error messages stay one readable line


class FileEntry(NamedTuple):
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a bundle holds: arcname -> (sha256, size), sorted, and small JSON metadata."""

    files: Mapping[str, FileEntry]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.files, Mapping):
            raise BundleError("manifest files must map names to (sha256, size)")
        for name, entry in self.files.items():
            problem = name_problem(name) or reserved_problem(name)
            if problem:
                raise BundleError(f"manifest entry {show_name(name)} {problem}")
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise BundleError(f"manifest entry {show_name(name)}: expected (sha256, size)")
            sha256, size = entry
            if not (isinstance(sha256, str) and SHA256_HEX.fullmatch(sha256)):
                raise BundleError(
                    f"manifest entry {show_name(name)}: sha256 {sha256!r} is not 64 lowercase hex"
                )
            if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
                raise BundleError(
                    f"manifest entry {show_name(name)}: size {size!r} is not a byte count"
                )
        check_name_set(self.files, "manifest")
        if not isinstance(self.metadata, Mapping):
            raise BundleError("manifest metadata must be a JSON object")
        try:  # a deep copy through JSON: later changes by the caller cannot alter the digest
            metadata = parse_json_strictly(canonical_json(dict(self.metadata)))
        except ValueError as error:
            raise BundleError(f"manifest metadata is not JSON: {error}") from None
        files = {name: FileEntry(*self.files[name]) for name in sorted(self.files)}
        object.__setattr__(self, "files", MappingProxyType(files))
        object.__setattr__(self, "metadata", MappingProxyType(metadata))

    def to_json(self) -> dict[str, Any]:
        files = {name: {"sha256": e.sha256, "size": e.size} for name, e in self.files.items()}
        return {"format": MANIFEST_FORMAT, "files": files, "metadata": dict(self.metadata)}

    @property
    def canonical_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def digest(self) -> str:
        """SHA-256 hex of the canonical bytes: the value a task envelope signs."""
        return hashlib.sha256(self.canonical_bytes).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = MANIFEST_NAME) -> Manifest:
        """Parse a manifest; it must be exactly in canonical form, so one manifest has one digest."""
        try:
            document = parse_json_strictly(data)
        except ValueError as error:
            raise BundleError(f"{where}: not strict JSON ({error})") from None
        expected = {"format", "files", "metadata"}
        if not isinstance(document, dict) or set(document) != expected:
            raise BundleError(f"{where}: expected an object with exactly {sorted(expected)}")
        if document["format"] != MANIFEST_FORMAT:
            raise BundleError(f"{where}: format {document['format']!r} != {MANIFEST_FORMAT!r}")
        files, metadata = document["files"], document["metadata"]
        if not isinstance(files, dict) or not isinstance(metadata, dict):
            raise BundleError(f"{where}: 'files' and 'metadata' must be objects")
        entries = {}
        for name, entry in files.items():
            if not isinstance(entry, dict) or set(entry) != {"sha256", "size"}:
                raise BundleError(
                    f"{where}: entry {show_name(name)} must have exactly sha256 and size"
                )
            entries[name] = FileEntry(entry["sha256"], entry["size"])
        try:
            manifest = cls(entries, metadata)
        except BundleError as error:
            raise BundleError(f"{where}: {error}") from None
        if manifest.canonical_bytes != data:
            raise BundleError(f"{where}: not in canonical form (sorted keys, no whitespace)")
        return manifest


def name_problem(name: str) -> str | None:
    """Why `name` may not be a bundle path, or None when it is a safe relative path."""
    if not isinstance(name, str):
        return "is not a string"
    if not name:
        return "is empty"
    if "\x00" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is an absolute path"
    if DRIVE_LETTER.match(name):
        return "starts with a drive letter"
    components = name.split("/")
    if ".." in components:
        return "has a '..' component"
    if "." in components or "" in components:
        return "has an empty or '.' component"
    if len(name) > MAX_NAME_CHARS:
        return f"is {len(name)} characters > {MAX_NAME_CHARS}"
    if len(components) > MAX_NAME_DEPTH:
        return f"is {len(components)} levels deep > {MAX_NAME_DEPTH}"
    if not all(NAME_COMPONENT.fullmatch(part) for part in components):
        return "has a character outside A-Z a-z 0-9 _ . + - (or starts with . + -)"
    return None


def check_name_set(names: Iterable[str], where: str) -> None:
    """Refuse names that would collide on disk: same name ignoring case, or file vs directory."""
    ordered = sorted(names)
    seen: dict[str, str] = {}
    for name in ordered:
        folded = name.casefold()
        if folded in seen:
            raise BundleError(
                f"{where}: {show_name(seen[folded])} and {show_name(name)} name the same file on a case-insensitive file system"
            )
        seen[folded] = name
    for name in ordered:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth]).casefold()
            if parent in seen:
                raise BundleError(
                    f"{where}: {show_name(seen[parent])} is a file and also the directory of {show_name(name)}"
                )


def show_name(name: str) -> str:
    # repr escapes newlines and control characters, so a hostile name keeps the message one line.
    limit = MAX_SHOWN_NAME_CHARS
    return repr(name if len(name) <= limit else name[: limit - 3] + "...")


def workflow_digest(manifest: Manifest) -> str:
    """SHA-256 hex over the manifest entries of the pipeline files (all but the study config)."""
    pipeline = {
        name: {"sha256": entry.sha256, "size": entry.size}
        for name, entry in manifest.files.items()
        if name != STUDY_CONFIG_NAME
    }
    document = {"format": WORKFLOW_FORMAT, "files": pipeline}
    return hashlib.sha256(canonical_json(document)).hexdigest()


def reserved_problem(name: str) -> str | None:
    # Case-folded: 'manifest.json' would collide with the manifest on macOS or Windows.
    return "is reserved for the manifest" if name.casefold() == MANIFEST_NAME.casefold() else None
