"""ed25519 keys, signed JSON documents and the trust stores that pin signers' public keys.

Key files (written by `generate_keypair`, `federation keys generate`):

* ``<name>.key``: the private key, PEM PKCS8, unencrypted, mode 0600. Loading refuses a key file
  that group or others may read, as ssh does.
* ``<name>.pub``: the public key, PEM SubjectPublicKeyInfo. A trust store is a directory of
  these, one per signer, so pinning a signer is copying its ``.pub`` file into the directory.

A signed document is a JSON object::

    {"format": "federation.signed-document/1", "signer": "coordinator",
     "key_id": "<16 hex>", "payload": {...}, "signature": "<base64 of 64 bytes>"}

The signature is ed25519 over the *canonical JSON* (below) of the document without its
``signature`` member, so the signer name, the key id and the format are signed with the payload:
a signature cannot be moved to another signer name or format version.

Canonical JSON and the strict parser are `federation.jsonio`'s.

Key ids: the first 16 hex characters (64 bits) of the SHA-256 of the raw 32-byte public key.
A key id only names which pinned key to check against; the signature is always verified with
the full pinned key of the claimed signer, so a key-id collision cannot make a forgery verify.
Two pinned keys with the same key id are refused when the trust store is built.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.errors import PolicyViolation, SpecError
from federation.jsonio import canonical_json, parse_json_strictly

DOCUMENT_FORMAT = "federation.signed-document/1"  # bump when the signed bytes change meaning
DOCUMENT_FIELDS = frozenset({"format", "signer", "key_id", "payload", "signature"})
KEY_ID_HEX_CHARS = 16  # 64 bits: a lookup name, not a security boundary (see module docstring)
SIGNATURE_BYTES = 64  # ed25519 signatures are always 64 bytes
# Signer names become file names (<name>.pub) and appear in error messages: keep them plain.
SIGNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PRIVATE_KEY_SUFFIX = ".key"
PUBLIC_KEY_SUFFIX = ".pub"
PRIVATE_KEY_MODE = 0o600  # only the owner may read a signing key
PUBLIC_KEY_MODE = 0o644  # public keys are meant to be copied around


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex characters of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_CHARS]


def check_signer_name(name: str, what: str = "signer name") -> str:
    if not isinstance(name, str) or not SIGNER_NAME.fullmatch(name):
        raise SpecError(
            f"{what} {name!r}: not a plain name; use 1-64 of A-Z a-z 0-9 _ . - (letter or digit first)"
        )
    return name


@dataclass(frozen=True)
class KeyPair:
    """A signer's key pair and where it lives. The private key never appears in repr or str."""

    name: str
    key_id: str
    private_key_path: Path
    public_key_path: Path
    private_key: Ed25519PrivateKey = field(repr=False, compare=False)
    public_key: Ed25519PublicKey = field(repr=False, compare=False)


def generate_keypair(out_dir: Path, name: str, *, force: bool = False) -> KeyPair:
    """Write a new ed25519 key pair as ``out_dir/<name>.key`` (0600) and ``<name>.pub``.

    Existing key files are never replaced unless `force`: losing a coordinator's key would
    orphan every node that pinned it.
    """
    check_signer_name(name, "key name")
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # a new key directory is private
    private_path = out_dir / f"{name}{PRIVATE_KEY_SUFFIX}"
    public_path = out_dir / f"{name}{PUBLIC_KEY_SUFFIX}"
    existing = [str(path) for path in (private_path, public_path) if path.exists()]
    if existing and not force:
        raise SpecError(
            f"key files already exist: {', '.join(existing)}; refusing to overwrite (use --force to replace them)"
        )
    private_key = Ed25519PrivateKey.generate()
    public_key = private_key.public_key()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_key_file(private_path, private_pem, PRIVATE_KEY_MODE, replace=force)
    _write_key_file(public_path, public_pem, PUBLIC_KEY_MODE, replace=force)
    return KeyPair(name, key_id(public_key), private_path, public_path, private_key, public_key)


def _write_key_file(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    # Written under a random temporary name created 0600 (never briefly world-readable), then
    # moved into place: a crash leaves either the old key or the new one, whole.
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    temporary = Path(temporary_name)
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if `path` appeared meanwhile: never clobber
            temporary.unlink()
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def load_private_key(path: Path, password: bytes | None = None) -> Ed25519PrivateKey:
    """Load a PEM PKCS8 ed25519 private key; refuse one that others may read."""
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as error:
        raise SpecError(f"private key {path}: cannot read ({error.strerror})") from None
    if mode & 0o077:
        raise SpecError(
            f"private key {path}: mode {mode:04o} lets others read it; limit 0600 (chmod 600 {path})"
        )
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as error:
        raise SpecError(f"private key {path}: not a PEM PKCS8 key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SpecError(
            f"private key {path}: {type(key).__name__} is not ed25519; use `federation keys generate`"
        )
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a PEM SubjectPublicKeyInfo ed25519 public key."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SpecError(f"public key {path}: cannot read ({error.strerror})") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as error:
        raise SpecError(f"public key {path}: not a PEM public key ({error})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SpecError(f"public key {path}: {type(key).__name__} is not ed25519")
    return key


@dataclass(frozen=True)
class TrustStore:
    """Public keys pinned by signer name. Verification trusts these keys and nothing else."""

    keys: Mapping[str, Ed25519PublicKey]
    source: str = "trust store"
    _signer_by_key_id: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_key_id: dict[str, str] = {}
        for signer, public_key in self.keys.items():
            check_signer_name(signer, f"{self.source} signer")
            if not isinstance(public_key, Ed25519PublicKey):
                raise SpecError(f"{self.source} signer '{signer}': not an ed25519 public key")
            identifier = key_id(public_key)
            if identifier in by_key_id:
                raise SpecError(
                    f"{self.source}: signers '{by_key_id[identifier]}' and '{signer}' share key id {identifier}; pin each key once"
                )
            by_key_id[identifier] = signer
        object.__setattr__(self, "keys", MappingProxyType(dict(sorted(self.keys.items()))))
        object.__setattr__(self, "_signer_by_key_id", MappingProxyType(by_key_id))

    @classmethod
    def from_directory(cls, directory: Path) -> TrustStore:
        """Pin every ``<signer>.pub`` in `directory`; other files are ignored."""
        if not directory.is_dir():
            raise SpecError(
                f"trust store {directory}: not a directory; create it and copy signers' .pub files into it"
            )
        keys = {
            path.name.removesuffix(PUBLIC_KEY_SUFFIX): load_public_key(path)
            for path in sorted(directory.glob(f"*{PUBLIC_KEY_SUFFIX}"))
            if path.is_file()
        }
        return cls(keys, source=f"trust store {directory}")

    @property
    def signers(self) -> tuple[str, ...]:
        return tuple(self.keys)

    def __contains__(self, signer: object) -> bool:
        return signer in self.keys

    def require(self, signer: str) -> Ed25519PublicKey:
        """The pinned key of `signer`; PolicyViolation if the signer is not pinned."""
        if signer not in self.keys:
            known = ", ".join(self.signers) or "none"
            raise PolicyViolation(
                f"signer {signer!r} is not in the {self.source} (pinned: {known}); pin its public key as {signer}.pub"
            )
        return self.keys[signer]

    def signer_of_key_id(self, identifier: str) -> str:
        """The signer whose pinned key has this key id; PolicyViolation if none."""
        if identifier not in self._signer_by_key_id:
            raise PolicyViolation(
                f"key id {identifier!r} matches no key in the {self.source} (pinned: {', '.join(self.signers) or 'none'}); refused"
            )
        return self._signer_by_key_id[identifier]


def sign_document(payload: dict[str, Any], private_key: Ed25519PrivateKey, signer: str) -> dict:
    """Wrap `payload` in a signed document (format in the module docstring)."""
    check_signer_name(signer)
    if not isinstance(payload, dict):
        raise ValueError(f"payload must be a JSON object, not {type(payload).__name__}")
    unsigned = {
        "format": DOCUMENT_FORMAT,
        "signer": signer,
        "key_id": key_id(private_key.public_key()),
        "payload": payload,
    }
    signature = private_key.sign(canonical_json(unsigned))
    return {**unsigned, "signature": base64.b64encode(signature).decode("ascii")}


def verify_document(
    document: Any, trust: TrustStore, *, expected_signer: str | None = None
) -> tuple[dict[str, Any], str]:
    """Check a signed document against `trust`; return ``(payload, signer)``.

    Refused (PolicyViolation), in this order: a malformed or unsigned document, a key id no
    pinned key has, a signer other than the one that key is pinned for, a signer other than
    `expected_signer`, and a signature that does not match the signed bytes.
    """
    if not isinstance(document, dict):
        raise PolicyViolation(
            f"signed document: expected a JSON object, got {type(document).__name__}; refused"
        )
    if "signature" not in document:
        raise PolicyViolation("signed document: no 'signature' (unsigned); refused")
    if set(document) != DOCUMENT_FIELDS:
        raise PolicyViolation(
            f"signed document: fields {sorted(document)} != {sorted(DOCUMENT_FIELDS)}; refused"
        )
    if document["format"] != DOCUMENT_FORMAT:
        raise PolicyViolation(
            f"signed document: format {document['format']!r} != {DOCUMENT_FORMAT!r}; refused"
        )
    signer, identifier, payload = document["signer"], document["key_id"], document["payload"]
    if not (isinstance(signer, str) and isinstance(identifier, str) and isinstance(payload, dict)):
        raise PolicyViolation(
            "signed document: signer and key_id must be strings, payload an object; refused"
        )
    pinned_signer = trust.signer_of_key_id(identifier)
    if pinned_signer != signer:
        raise PolicyViolation(
            f"signed document: signer {signer!r} used key {identifier} which is pinned for {pinned_signer!r}; refused"
        )
    if expected_signer is not None and signer != expected_signer:
        raise PolicyViolation(
            f"signed document: signer {signer!r} != expected signer {expected_signer!r}; refused"
        )
    signature = _decode_signature(document["signature"])
    unsigned = {name: document[name] for name in DOCUMENT_FIELDS - {"signature"}}
    try:
        signed_bytes = canonical_json(unsigned)
    except ValueError as error:
        raise PolicyViolation(
            f"signed document: payload is not canonical JSON ({error}); refused"
        ) from None
    try:
        trust.require(signer).verify(signature, signed_bytes)
    except InvalidSignature:
        raise PolicyViolation(
            f"signed document from {signer!r} (key {identifier}): signature does not match the content; refused"
        ) from None
    return payload, signer


def _decode_signature(value: Any) -> bytes:
    if not isinstance(value, str):
        raise PolicyViolation("signed document: 'signature' is not a base64 string; refused")
    try:
        signature = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise PolicyViolation("signed document: 'signature' is not valid base64; refused") from None
    if len(signature) != SIGNATURE_BYTES:
        raise PolicyViolation(
            f"signed document: signature is {len(signature)} bytes != {SIGNATURE_BYTES}; refused"
        )
    return signature


def read_signed_document(
    path: Path, trust: TrustStore, *, expected_signer: str | None = None
) -> tuple[dict[str, Any], str]:
    """Read a signed JSON document from `path` and verify it (see `verify_document`)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PolicyViolation(
            f"signed document {path}: cannot read ({error.strerror}); refused"
        ) from None
    try:
        document = parse_json_strictly(data)
    except ValueError as error:
        raise PolicyViolation(
            f"signed document {path}: not strict JSON ({error}); refused"
        ) from None
    return verify_document(document, trust, expected_signer=expected_signer)


def write_signed_document(path: Path, document: dict[str, Any]) -> None:
    """Write a signed document as canonical JSON plus a newline."""
    path.write_bytes(canonical_json(document) + b"\n")
