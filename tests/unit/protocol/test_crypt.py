"""Crypt4GH sealing of results: round trip, the signed plaintext digest catching truncation at a
segment boundary and reordered segments, and no key material in any log at DEBUG level."""

from __future__ import annotations

import base64
import io
import logging
import os
from pathlib import Path

import crypt4gh.header
import crypt4gh.keys
import crypt4gh.keys.c4gh
import crypt4gh.lib
import pytest
from crypt4gh import CIPHER_SEGMENT_SIZE, SEGMENT_SIZE, sodium
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from federation.errors import BundleError, SpecError
from federation.files import sha256_file
from federation.protocol import crypt
from federation.protocol.crypt import (
    SealedFile,
    generate_keypair,
    load_public_key,
    load_secret_key,
    open_sealed,
    seal,
)

PLAINTEXT_BYTES = 3 * SEGMENT_SIZE + 1234  # four segments, the last one short


@pytest.fixture()
def keys(tmp_path):
    secret_path, public_path = generate_keypair(tmp_path / "keys", "coordinator")
    return load_secret_key(secret_path), load_public_key(public_path), secret_path, public_path


@pytest.fixture()
def plain(tmp_path):
    path = tmp_path / "result.tar"
    path.write_bytes(os.urandom(PLAINTEXT_BYTES))
    return path


def _header_length(sealed: Path) -> int:
    with open(sealed, "rb") as handle:
        list(crypt4gh.header.parse(handle))  # a generator: reading it moves past the header
        return handle.tell()


def test_round_trip_and_signed_entry(tmp_path, keys, plain):
    secret, public, *_ = keys
    entry = seal(plain, tmp_path / "result.tar.c4gh", public)
    assert entry.plaintext_bytes == PLAINTEXT_BYTES and entry.plaintext_sha256 == sha256_file(plain)
    assert SealedFile.from_dict(entry.as_dict(), "x") == entry
    out = open_sealed(
        tmp_path / "result.tar.c4gh", tmp_path / "out.tar", secret, entry, "node 'fi'"
    )
    assert out.read_bytes() == plain.read_bytes()
    assert plain.read_bytes() not in (tmp_path / "result.tar.c4gh").read_bytes()


def test_key_files_are_crypt4gh_format_and_private(keys):
    secret, public, secret_path, public_path = keys
    assert secret_path.stat().st_mode & 0o777 == 0o600
    assert crypt4gh.keys.get_public_key(public_path) == public  # the crypt4gh tools read them
    stream = io.BytesIO(
        crypt4gh.keys.load_from_pem(secret_path)[len(crypt4gh.keys.c4gh.MAGIC_WORD) :]
    )
    assert crypt4gh.keys.c4gh.parse_private_key(stream, None) == secret
    with pytest.raises(SpecError, match="already exist"):
        generate_keypair(secret_path.parent, "coordinator")
    secret_path.chmod(0o640)
    with pytest.raises(SpecError, match="chmod 600"):
        load_secret_key(secret_path)


def test_wrong_key_is_refused(tmp_path, keys, plain):
    _, public, *_ = keys
    entry = seal(plain, tmp_path / "r.c4gh", public)
    other = load_secret_key(generate_keypair(tmp_path / "other", "x")[0])
    with pytest.raises(BundleError, match="cannot be decrypted"):
        open_sealed(tmp_path / "r.c4gh", tmp_path / "out", other, entry, "r")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".partial-*"))


def test_changed_ciphertext_is_refused(tmp_path, keys, plain):
    secret, public, *_ = keys
    entry = seal(plain, tmp_path / "r.c4gh", public)
    data = bytearray((tmp_path / "r.c4gh").read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "r.c4gh").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="ciphertext sha256"):
        open_sealed(tmp_path / "r.c4gh", tmp_path / "out", secret, entry, "r")
    # Even if the ciphertext digest were not signed, the segment's MAC fails.
    forged = SealedFile(
        entry.plaintext_sha256, entry.plaintext_bytes, sha256_file(tmp_path / "r.c4gh")
    )
    with pytest.raises(BundleError, match="cannot be decrypted"):
        open_sealed(tmp_path / "r.c4gh", tmp_path / "out", secret, forged, "r")


def _decrypts_silently(sealed: Path, secret: bytes) -> bytes:
    out = io.BytesIO()
    with open(sealed, "rb") as handle:
        crypt4gh.lib.decrypt([(0, secret, None)], handle, out)
    return out.getvalue()


def test_truncation_at_a_segment_boundary_is_caught_by_the_signed_length(tmp_path, keys, plain):
    secret, public, *_ = keys
    entry = seal(plain, tmp_path / "r.c4gh", public)
    data = (tmp_path / "r.c4gh").read_bytes()
    cut = data[: _header_length(tmp_path / "r.c4gh") + 2 * CIPHER_SEGMENT_SIZE]
    (tmp_path / "cut.c4gh").write_bytes(cut)
    # Crypt4GH alone accepts it: two whole, authentic segments and no error.
    assert (
        _decrypts_silently(tmp_path / "cut.c4gh", secret) == plain.read_bytes()[: 2 * SEGMENT_SIZE]
    )
    as_if_unsigned = SealedFile(
        entry.plaintext_sha256, entry.plaintext_bytes, sha256_file(tmp_path / "cut.c4gh")
    )
    with pytest.raises(
        BundleError, match=f"plaintext length {2 * SEGMENT_SIZE} != signed {PLAINTEXT_BYTES}"
    ):
        open_sealed(tmp_path / "cut.c4gh", tmp_path / "out", secret, as_if_unsigned, "r")
    with pytest.raises(BundleError, match="ciphertext sha256"):  # and the signed digest too
        open_sealed(tmp_path / "cut.c4gh", tmp_path / "out", secret, entry, "r")
    assert not (tmp_path / "out").exists()


def test_reordered_segments_are_caught_by_the_signed_digest(tmp_path, keys, plain):
    secret, public, *_ = keys
    entry = seal(plain, tmp_path / "r.c4gh", public)
    data = (tmp_path / "r.c4gh").read_bytes()
    start = _header_length(tmp_path / "r.c4gh")
    first = data[start : start + CIPHER_SEGMENT_SIZE]
    second = data[start + CIPHER_SEGMENT_SIZE : start + 2 * CIPHER_SEGMENT_SIZE]
    swapped = data[:start] + second + first + data[start + 2 * CIPHER_SEGMENT_SIZE :]
    (tmp_path / "swapped.c4gh").write_bytes(swapped)
    text = plain.read_bytes()
    reordered = (
        text[SEGMENT_SIZE : 2 * SEGMENT_SIZE] + text[:SEGMENT_SIZE] + text[2 * SEGMENT_SIZE :]
    )
    assert _decrypts_silently(tmp_path / "swapped.c4gh", secret) == reordered  # Crypt4GH: fine
    as_if_unsigned = SealedFile(
        entry.plaintext_sha256, entry.plaintext_bytes, sha256_file(tmp_path / "swapped.c4gh")
    )
    with pytest.raises(BundleError, match="plaintext sha256"):
        open_sealed(tmp_path / "swapped.c4gh", tmp_path / "out", secret, as_if_unsigned, "r")


def test_entry_fields_are_checked():
    with pytest.raises(BundleError, match="lacks sha256/length"):
        SealedFile.from_dict({"plaintext_sha256": "a"}, "COMPLETE")
    with pytest.raises(BundleError, match="not an integer"):
        SealedFile.from_dict(
            {"plaintext_sha256": "a", "plaintext_bytes": "9", "ciphertext_sha256": "b"}, "C"
        )


# ---------------------------------------------------------------- no key material in any log


def _forms(secret: bytes) -> list[str]:
    forms = [
        secret.hex(),
        secret.hex().upper(),
        ":".join(f"{b:02x}" for b in secret),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.b32encode(secret).decode(),
        repr(secret),
        str(list(secret)),
        str(tuple(secret)),
    ]
    # Base64 of the key shifted inside a longer encoding: any 12-character window of each form.
    return forms + [base64.b64encode(bytes([0, *secret])).decode()[4:16]]


def _all_logged(caplog, capfd) -> str:
    records = [
        f"{r.name} {r.levelname} {r.msg} {r.args!r} {r.getMessage()}" for r in caplog.records
    ]
    out, err = capfd.readouterr()
    return "\n".join([caplog.text, *records, out, err])


class _RecordingKeys:
    """Stands in for X25519PrivateKey in federation.protocol.crypt to learn the ephemeral sender keys."""

    made: list[X25519PrivateKey] = []

    @classmethod
    def generate(cls) -> X25519PrivateKey:
        key = X25519PrivateKey.generate()
        cls.made.append(key)
        return key


def _raw(key: X25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_no_key_material_in_any_log_at_debug(tmp_path, plain, caplog, capfd, monkeypatch):
    caplog.set_level(logging.DEBUG)
    for name in (
        "crypt4gh",
        "crypt4gh.lib",
        "crypt4gh.header",
        "crypt4gh.keys",
        "crypt4gh.keys.c4gh",
    ):
        logging.getLogger(name).setLevel(logging.DEBUG)  # as if an admin asked for everything
    monkeypatch.setattr(crypt, "X25519PrivateKey", _RecordingKeys)
    _RecordingKeys.made.clear()
    secret_path, public_path = generate_keypair(tmp_path / "keys", "coordinator")
    secret, public = load_secret_key(secret_path), load_public_key(public_path)
    entry = seal(plain, tmp_path / "r.c4gh", public)
    open_sealed(tmp_path / "r.c4gh", tmp_path / "out", secret, entry, "r")
    wrong = load_secret_key(generate_keypair(tmp_path / "other", "x")[0])
    with pytest.raises(BundleError):
        open_sealed(tmp_path / "r.c4gh", tmp_path / "out2", wrong, entry, "r")
    logged = _all_logged(caplog, capfd)

    sender = _raw(_RecordingKeys.made[-1])
    with open(tmp_path / "r.c4gh", "rb") as handle:
        session_keys, _ = crypt4gh.header.deconstruct(handle, [(0, secret, None)])
    sender_public = sodium.derive_pk(sender)
    material = {
        "coordinator secret key": secret,
        "other secret key": wrong,
        "ephemeral sender key": sender,
        "session key": session_keys[0],
        "shared key (sender side)": sodium.kx_server(sender_public, sender, public),
        "shared key (recipient side)": sodium.kx_client(public, secret, sender_public),
    }
    pem_body = b"".join(secret_path.read_bytes().splitlines()[1:-1]).decode()
    assert pem_body not in logged
    for what, key in material.items():
        for form in _forms(bytes(key)):
            assert form not in logged, f"{what} appears in the logs as {form[:12]}..."
    assert "crypt4gh" not in {r.name.split(".")[0] for r in caplog.records}


def test_the_log_check_would_see_a_leak(tmp_path, plain, caplog, capfd, keys):
    """Control: with the filter removed, crypt4gh does log the secret key at DEBUG."""
    caplog.set_level(logging.DEBUG)
    header_logger = logging.getLogger("crypt4gh.header")
    header_logger.setLevel(logging.DEBUG)
    secret, public, *_ = keys
    entry = seal(plain, tmp_path / "r.c4gh", public)
    header_logger.removeFilter(crypt._DROP)
    try:
        with open(tmp_path / "r.c4gh", "rb") as handle:
            crypt4gh.lib.decrypt([(0, secret, None)], handle, io.BytesIO())
    finally:
        crypt.quiet_crypt4gh_logs()
    assert secret.hex() in _all_logged(caplog, capfd)
    assert entry.plaintext_bytes == PLAINTEXT_BYTES
