"""Results in transit: Crypt4GH (GA4GH) encryption for the coordinator, with a signed manifest.

A node encrypts each result file for the coordinator's Crypt4GH (X25519) public key with a
fresh ephemeral sender key; only the coordinator's secret key opens it. Crypt4GH authenticates
each 64 KiB segment but not their number or order: a file cut at a segment boundary, or with
segments swapped, still decrypts. So every sealed file is described by a `SealedFile` (the
plaintext's SHA-256 and length, the ciphertext's SHA-256), and the node signs those entries
with its ed25519 key (node/agent.py, in the COMPLETE marker); `open_sealed` refuses any file whose
decrypted bytes do not match them, and keeps nothing of it.

The crypt4gh library logs secret keys, shared keys and session keys at DEBUG level. Every
record of its loggers is dropped here (`quiet_crypt4gh_logs`, installed on import and again
before each use), whatever level an application configures.

Key files follow the crypt4gh tools' formats (``crypt4gh-keygen`` reads and writes the same):
``<name>.c4gh.pub`` and ``<name>.c4gh.sec`` (unencrypted, mode 0600; loading refuses a secret
key that group or others may read). Passphrase-protected keys are not supported: a node or
coordinator service has no one to type the passphrase.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crypt4gh.header  # noqa: F401  (imported so its logger exists before it is quietened)
import crypt4gh.keys  # noqa: F401  (idem)
import crypt4gh.lib
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from federation.errors import BundleError, SpecError
from federation.files import atomic_path, atomic_write, sha256_file

ENCRYPTION = "crypt4gh/1"  # named in signed results; bump if the scheme changes
SEALED_RESULT = "result.tar.c4gh"  # a node's encrypted result bundle in its outbox
PUBLIC_SUFFIX = ".c4gh.pub"
SECRET_SUFFIX = ".c4gh.sec"
SECRET_MODE = 0o600
KEY_BYTES = 32  # X25519
C4GH_MAGIC = b"c4gh-v1"
PUBLIC_HEADER, PUBLIC_FOOTER = (
    b"-----BEGIN CRYPT4GH PUBLIC KEY-----",
    b"-----END CRYPT4GH PUBLIC KEY-----",
)
SECRET_HEADER, SECRET_FOOTER = (
    b"-----BEGIN CRYPT4GH PRIVATE KEY-----",
    b"-----END CRYPT4GH PRIVATE KEY-----",
)


class _DropEverything(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


_DROP = _DropEverything()


def quiet_crypt4gh_logs() -> None:
    """Attach the dropping filter to every crypt4gh logger (filters act where a record is made)."""
    names = [name for name in logging.root.manager.loggerDict if name.split(".")[0] == "crypt4gh"]
    for name in ["crypt4gh", *names]:
        logger = logging.getLogger(name)
        if _DROP not in logger.filters:
            logger.addFilter(_DROP)


quiet_crypt4gh_logs()


# ---------------------------------------------------------------- keys


def _pem(header: bytes, payload: bytes, footer: bytes) -> bytes:
    return header + b"\n" + base64.b64encode(payload) + b"\n" + footer + b"\n"


def _encode_string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def generate_keypair(out_dir: Path, name: str, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``<name>.c4gh.sec`` (0600) and ``<name>.c4gh.pub``; never replace keys unless `force`."""
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret_path, public_path = (
        out_dir / f"{name}{SECRET_SUFFIX}",
        out_dir / f"{name}{PUBLIC_SUFFIX}",
    )
    existing = [str(path) for path in (secret_path, public_path) if path.exists()]
    if existing and not force:
        raise SpecError(
            f"Crypt4GH key files already exist: {', '.join(existing)}; refusing to overwrite"
        )
    private = X25519PrivateKey.generate()
    secret = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    body = C4GH_MAGIC + _encode_string(b"none") + _encode_string(b"none") + _encode_string(secret)
    atomic_write(secret_path, _pem(SECRET_HEADER, body, SECRET_FOOTER), mode=SECRET_MODE)
    atomic_write(public_path, _pem(PUBLIC_HEADER, public, PUBLIC_FOOTER))
    return secret_path, public_path


def _pem_payload(path: Path, header: bytes, footer: bytes, what: str) -> bytes:
    lines = [line.strip() for line in path.read_bytes().splitlines() if line.strip()]
    if len(lines) < 3 or lines[0] != header or lines[-1] != footer:
        raise SpecError(
            f"{what} '{path}': not a Crypt4GH key file; write one with `federation demo` or crypt4gh-keygen"
        )
    try:
        return base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except ValueError:
        raise SpecError(f"{what} '{path}': key body is not base64") from None


def load_public_key(path: Path) -> bytes:
    key = _pem_payload(path, PUBLIC_HEADER, PUBLIC_FOOTER, "Crypt4GH public key")
    if len(key) != KEY_BYTES:
        raise SpecError(f"Crypt4GH public key '{path}': {len(key)} bytes, expected {KEY_BYTES}")
    return key


def load_secret_key(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SpecError(
            f"Crypt4GH secret key '{path}': mode {mode:o} lets others read it; chmod 600"
        )
    stream = io.BytesIO(_pem_payload(path, SECRET_HEADER, SECRET_FOOTER, "Crypt4GH secret key"))
    magic = stream.read(len(C4GH_MAGIC))
    kdf, cipher, key = (stream.read(int.from_bytes(stream.read(2), "big")) for _ in range(3))
    if magic != C4GH_MAGIC or kdf != b"none" or cipher != b"none" or len(key) != KEY_BYTES:
        raise SpecError(
            f"Crypt4GH secret key '{path}': not an unencrypted X25519 key (passphrase-protected "
            "keys are not supported for unattended services)"
        )
    return key


# ---------------------------------------------------------------- sealing


@dataclass(frozen=True)
class SealedFile:
    """What the node signs about one encrypted file."""

    plaintext_sha256: str
    plaintext_bytes: int
    ciphertext_sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "plaintext_sha256": self.plaintext_sha256,
            "plaintext_bytes": self.plaintext_bytes,
            "ciphertext_sha256": self.ciphertext_sha256,
        }

    @classmethod
    def from_dict(cls, entry: Any, where: str) -> SealedFile:
        try:
            sealed = cls(
                str(entry["plaintext_sha256"]),
                entry["plaintext_bytes"],
                str(entry["ciphertext_sha256"]),
            )
        except (KeyError, TypeError):
            raise BundleError(
                f"{where}: sealed-file entry {entry!r} lacks sha256/length fields; refused"
            ) from None
        if not isinstance(sealed.plaintext_bytes, int) or isinstance(sealed.plaintext_bytes, bool):
            raise BundleError(
                f"{where}: plaintext_bytes {sealed.plaintext_bytes!r} is not an integer; refused"
            )
        return sealed


class _Hashing(io.RawIOBase):
    """A file wrapper that hashes and counts what passes through (one pass over the data)."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.digest, self.count = handle, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = self.handle.readinto(buffer)
        self.digest.update(memoryview(buffer)[:size])
        self.count += size
        return size

    def write(self, data: Any) -> int:
        self.digest.update(data)
        self.count += len(data)
        return int(self.handle.write(data))


def seal(plain: Path, sealed: Path, recipient_public_key: bytes) -> SealedFile:
    """Encrypt `plain` into `sealed` for the recipient; return what the sender must sign."""
    quiet_crypt4gh_logs()
    sender = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )  # ephemeral: the signature, not this key, says who sent the file
    with atomic_path(sealed) as tmp, open(plain, "rb") as source, open(tmp, "wb") as target:
        reader = _Hashing(source)
        crypt4gh.lib.encrypt([(0, sender, recipient_public_key)], reader, target)
    return SealedFile(reader.digest.hexdigest(), reader.count, sha256_file(sealed))


def open_sealed(
    sealed: Path, plain: Path, secret_key: bytes, expected: SealedFile, label: str
) -> Path:
    """Decrypt `sealed` into `plain` only if ciphertext and plaintext match the signed entry."""
    quiet_crypt4gh_logs()
    actual = sha256_file(sealed)
    if actual != expected.ciphertext_sha256:
        raise BundleError(
            f"{label}: ciphertext sha256 {actual[:16]}... != signed {expected.ciphertext_sha256[:16]}...; refused"
        )
    # Written aside and renamed only when it matches: a refused plaintext is never left behind.
    with atomic_path(plain) as tmp:
        try:
            with open(sealed, "rb") as source, open(tmp, "wb") as target:
                writer = _Hashing(target)
                crypt4gh.lib.decrypt([(0, secret_key, None)], source, writer)
        except Exception as error:  # not for this key, a segment failed its MAC, a cut header...
            raise BundleError(
                f"{label}: cannot be decrypted with the coordinator's key "
                f"({type(error).__name__}); refused"
            ) from None
        if writer.count != expected.plaintext_bytes:  # e.g. cut at a segment boundary
            raise BundleError(
                f"{label}: plaintext length {writer.count} != signed "
                f"{expected.plaintext_bytes}; refused"
            )
        if writer.digest.hexdigest() != expected.plaintext_sha256:  # e.g. segments reordered
            raise BundleError(
                f"{label}: plaintext sha256 {writer.digest.hexdigest()[:16]}... != signed "
                f"{expected.plaintext_sha256[:16]}...; refused"
            )
    return plain
