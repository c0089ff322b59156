from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.cli import main
from federation.errors import PolicyViolation, SpecError
from federation.protocol.signing import (
    DOCUMENT_FORMAT,
    KeyPair,
    TrustStore,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    read_signed_document,
    sign_document,
    verify_document,
    write_signed_document,
)

PAYLOAD = {"study_id": "s1", "task_id": "t-7", "node_id": "fi", "sequence": 3, "ok": True}


@pytest.fixture()
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture()
def coordinator(keys_dir: Path) -> KeyPair:
    return generate_keypair(keys_dir, "coordinator")


@pytest.fixture()
def node_fi(keys_dir: Path) -> KeyPair:
    return generate_keypair(keys_dir, "fi")


@pytest.fixture()
def trust(coordinator: KeyPair, node_fi: KeyPair) -> TrustStore:
    return TrustStore({"coordinator": coordinator.public_key, "fi": node_fi.public_key})


def test_generate_writes_private_key_0600_and_public_pem(coordinator: KeyPair, keys_dir: Path):
    assert coordinator.private_key_path == keys_dir / "coordinator.key"
    assert stat.S_IMODE(coordinator.private_key_path.stat().st_mode) == 0o600
    assert coordinator.private_key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert coordinator.public_key_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert not [path for path in keys_dir.iterdir() if path.name.startswith(".")]


def test_loaded_keys_match_generated(coordinator: KeyPair):
    private = load_private_key(coordinator.private_key_path)
    public = load_public_key(coordinator.public_key_path)
    assert key_id(private.public_key()) == key_id(public) == coordinator.key_id


def test_key_id_is_first_16_hex_of_sha256_of_raw_public_key(coordinator: KeyPair):
    raw = coordinator.public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert len(raw) == 32
    assert coordinator.key_id == hashlib.sha256(raw).hexdigest()[:16]


def test_generate_refuses_to_overwrite_unless_forced(coordinator: KeyPair, keys_dir: Path):
    before = coordinator.private_key_path.read_bytes()
    with pytest.raises(SpecError, match="already exist.*--force"):
        generate_keypair(keys_dir, "coordinator")
    assert coordinator.private_key_path.read_bytes() == before
    replaced = generate_keypair(keys_dir, "coordinator", force=True)
    assert replaced.key_id != coordinator.key_id
    assert stat.S_IMODE(replaced.private_key_path.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 65, "sp ace"])
def test_generate_refuses_names_that_are_not_plain(keys_dir: Path, name: str):
    with pytest.raises(SpecError, match="not a plain name"):
        generate_keypair(keys_dir, name)


def test_repr_and_str_never_show_the_private_key(coordinator: KeyPair):
    raw = coordinator.private_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    pem_body = coordinator.private_key_path.read_text().splitlines()[1]
    for text in (repr(coordinator), str(coordinator), f"{coordinator}"):
        assert coordinator.key_id in text
        for secret in (raw.hex(), base64.b64encode(raw).decode(), pem_body, "private_key="):
            assert secret not in text


def test_private_key_readable_by_others_is_refused(coordinator: KeyPair):
    coordinator.private_key_path.chmod(0o640)
    with pytest.raises(SpecError, match="mode 0640 .* limit 0600"):
        load_private_key(coordinator.private_key_path)


def test_non_ed25519_and_garbage_keys_are_refused(tmp_path: Path):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pub = tmp_path / "ec.pub"
    ec_pub.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(SpecError, match="not ed25519"):
        load_public_key(ec_pub)
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    garbage.chmod(0o600)
    with pytest.raises(SpecError, match="not a PEM"):
        load_private_key(garbage)
    with pytest.raises(SpecError, match="cannot read"):
        load_public_key(tmp_path / "missing.pub")


def test_sign_then_verify_returns_payload_and_signer(coordinator: KeyPair, trust: TrustStore):
    document = sign_document(PAYLOAD, coordinator.private_key, "coordinator")
    assert document["format"] == DOCUMENT_FORMAT
    assert document["key_id"] == coordinator.key_id
    assert len(base64.b64decode(document["signature"])) == 64
    assert verify_document(document, trust) == (PAYLOAD, "coordinator")
    assert verify_document(document, trust, expected_signer="coordinator")[1] == "coordinator"


def test_signed_document_survives_a_file_round_trip(
    coordinator: KeyPair, trust: TrustStore, tmp_path: Path
):
    path = tmp_path / "task.json"
    write_signed_document(path, sign_document(PAYLOAD, coordinator.private_key, "coordinator"))
    assert read_signed_document(path, trust) == (PAYLOAD, "coordinator")


def test_unsigned_document_is_refused(coordinator: KeyPair, trust: TrustStore):
    with pytest.raises(PolicyViolation, match="no 'signature' \\(unsigned\\)"):
        verify_document(PAYLOAD, trust)
    document = sign_document(PAYLOAD, coordinator.private_key, "coordinator")
    del document["signature"]
    with pytest.raises(PolicyViolation, match="unsigned"):
        verify_document(document, trust)


def test_key_not_in_trust_store_is_refused(trust: TrustStore):
    stranger = Ed25519PrivateKey.generate()
    document = sign_document(PAYLOAD, stranger, "coordinator")
    with pytest.raises(
        PolicyViolation, match=f"key id '{key_id(stranger.public_key())}' matches no key"
    ):
        verify_document(document, trust)


def test_wrong_key_claiming_a_pinned_key_id_is_refused(coordinator: KeyPair, trust: TrustStore):
    forged = sign_document(PAYLOAD, Ed25519PrivateKey.generate(), "coordinator")
    forged["key_id"] = coordinator.key_id
    with pytest.raises(PolicyViolation, match="signature does not match"):
        verify_document(forged, trust)


def test_signer_key_mismatch_is_refused(node_fi: KeyPair, trust: TrustStore):
    document = sign_document(PAYLOAD, node_fi.private_key, "coordinator")
    with pytest.raises(PolicyViolation, match="signer 'coordinator' used key .* pinned for 'fi'"):
        verify_document(document, trust)


def test_unexpected_signer_is_refused(node_fi: KeyPair, trust: TrustStore):
    document = sign_document(PAYLOAD, node_fi.private_key, "fi")
    with pytest.raises(PolicyViolation, match="signer 'fi' != expected signer 'coordinator'"):
        verify_document(document, trust, expected_signer="coordinator")


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["payload"].update(sequence=4),
        lambda d: d["payload"].update(extra="x"),
        lambda d: d["payload"].pop("ok"),
        lambda d: d.update(format="federation.signed-document/2"),
    ],
)
def test_document_changed_after_signing_is_refused(coordinator: KeyPair, trust: TrustStore, change):
    document = json.loads(
        json.dumps(sign_document(PAYLOAD, coordinator.private_key, "coordinator"))
    )
    change(document)
    with pytest.raises(PolicyViolation, match="refused"):
        verify_document(document, trust)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(signature="!!!"), "not valid base64"),
        (lambda d: d.update(signature=base64.b64encode(b"x" * 63).decode()), "63 bytes != 64"),
        (lambda d: d.update(signature=None), "not a base64 string"),
        (lambda d: d.update(extra=1), "fields"),
        (lambda d: d.update(payload=[1]), "payload an object"),
        (lambda d: d.update(key_id=7), "key_id must be strings"),
    ],
)
def test_malformed_document_is_refused(coordinator: KeyPair, trust: TrustStore, change, message):
    document = sign_document(PAYLOAD, coordinator.private_key, "coordinator")
    change(document)
    with pytest.raises(PolicyViolation, match=message):
        verify_document(document, trust)


def test_document_that_is_not_an_object_is_refused(trust: TrustStore):
    with pytest.raises(PolicyViolation, match="expected a JSON object, got list"):
        verify_document([], trust)


def test_duplicate_json_keys_are_refused(coordinator: KeyPair, trust: TrustStore, tmp_path: Path):
    document = sign_document(PAYLOAD, coordinator.private_key, "coordinator")
    text = json.dumps(document)
    path = tmp_path / "task.json"
    path.write_text(text[:-1] + ', "signer": "fi"}')
    with pytest.raises(PolicyViolation, match="duplicate key 'signer'"):
        read_signed_document(path, trust)


def test_trust_store_pins_pub_files_from_a_directory(
    coordinator: KeyPair, node_fi: KeyPair, keys_dir: Path
):
    trust = TrustStore.from_directory(keys_dir)  # the .key files beside them are ignored
    assert trust.signers == ("coordinator", "fi")
    assert key_id(trust.require("fi")) == node_fi.key_id
    assert "coordinator" in trust
    with pytest.raises(PolicyViolation, match="signer 'nl' is not in the trust store .* nl.pub"):
        trust.require("nl")


def test_trust_store_refuses_one_key_pinned_twice(coordinator: KeyPair):
    with pytest.raises(SpecError, match="share key id"):
        TrustStore({"coordinator": coordinator.public_key, "alias": coordinator.public_key})


def test_trust_store_directory_must_exist(tmp_path: Path):
    with pytest.raises(SpecError, match="not a directory"):
        TrustStore.from_directory(tmp_path / "missing")


def test_cli_generates_keys_and_refuses_to_overwrite(tmp_path: Path, capsys):
    out = tmp_path / "keys"
    assert main(["keys", "generate", "--out", str(out), "--name", "fi"]) == 0
    printed = capsys.readouterr().out
    pair_id = key_id(load_public_key(out / "fi.pub"))
    assert f"key_id\t{pair_id}" in printed
    assert str(out / "fi.key") in printed
    assert stat.S_IMODE((out / "fi.key").stat().st_mode) == 0o600
    assert main(["keys", "generate", "--out", str(out), "--name", "fi"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["keys", "generate", "--out", str(out), "--name", "fi", "--force"]) == 0
