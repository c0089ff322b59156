"""Content-addressed bundles: the pipeline files and study config a coordinator ships to a node.

A bundle is an uncompressed POSIX (pax) tar. Its first member is ``MANIFEST.json`` (format in
`federation.protocol.manifest`); then one member per file, sorted by name. Every member is a regular
file with mtime 0, uid/gid 0, empty owner names and mode 0644, so the same files and metadata
always give the same bytes and the same manifest digest.

Reading fails closed: `inspect_bundle` checks every member header against the limits and the
name rules, the manifest against the members, and every file's size and SHA-256, before
anything is written. `unpack_bundle` also requires the manifest digest the coordinator signed,
then writes only the vetted members, by reading their bytes (never ``tar.extractall``) and
checking them again, into a temporary directory renamed to the destination when complete.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from federation.errors import BundleError, SpecError
from federation.files import REPO_ROOT, sha256_file
from federation.protocol.manifest import (
    MANIFEST_NAME,
    SHA256_HEX,
    STUDY_CONFIG_NAME,
    FileEntry,
    Manifest,
    check_name_set,
    name_problem,
    reserved_problem,
    show_name,
    workflow_digest,
)

__all__ = [  # the manifest types are part of this module's interface
    "DEFAULT_LIMITS",
    "BundleLimits",
    "FileEntry",
    "Manifest",
    "collect_files",
    "inspect_bundle",
    "pack_bundle",
    "pipeline_files",
    "pipeline_workflow_digest",
    "unpack_bundle",
    "workflow_digest",
]

MIB = 1024 * 1024
# What a node needs to run a study, relative to the repository root (the layout in the README).
PIPELINE_PATTERNS = (
    "Snakefile",
    "rules/*.smk",
    "workflows/*.cwl",  # the same pipeline in CWL, for studies with `engine: cwl`
    "workflows/tools/*.cwl",
    "envs/*",
    "config/schema/*.json",
    "profiles/local/*",
)
ARCHIVE_OVERHEAD_PER_MEMBER = 4096  # header, pax header for long names, padding to 512
TAR_END_BYTES = 10240  # end-of-archive zeros, padded to tar's 20-block record
READ_CHUNK = MIB  # stream file contents; never hold more than this per read
ALLOWED_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
TYPE_NAMES = {
    tarfile.SYMTYPE: "a symlink",
    tarfile.LNKTYPE: "a hardlink",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
    tarfile.DIRTYPE: "a directory",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


@dataclass(frozen=True)
class BundleLimits:
    """Upper bounds a bundle must stay within; checked from the headers before reading data."""

    max_members: int = 1_000  # the pipeline is ~20 files; more is a bug or an inode attack
    max_total_bytes: int = 64 * MIB  # code and configs are kilobytes; data never rides along
    max_file_bytes: int = 16 * MIB  # above the largest env lock file; below a disk-filler
    max_manifest_bytes: int = 1 * MIB  # 1,000 entries of ~150 bytes plus small metadata

    def __post_init__(self) -> None:
        for name in ("max_members", "max_total_bytes", "max_file_bytes", "max_manifest_bytes"):
            if getattr(self, name) < 1:
                raise SpecError(f"bundle limit {name}={getattr(self, name)} must be >= 1")

    @property
    def max_archive_bytes(self) -> int:
        """Largest tar file worth opening: contents plus per-member overhead."""
        members = self.max_members + 1
        return (
            self.max_total_bytes
            + self.max_manifest_bytes
            + members * ARCHIVE_OVERHEAD_PER_MEMBER
            + TAR_END_BYTES
        )


DEFAULT_LIMITS = BundleLimits()


def collect_files(root: Path, patterns: tuple[str, ...]) -> dict[str, Path]:
    """arcname -> path for regular files under `root` matching `patterns` (hidden files skipped)."""
    found: dict[str, Path] = {}
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if path.is_file() and not path.name.startswith("."):  # editor and OS litter
                found[path.relative_to(root).as_posix()] = path
    return found


def pipeline_files(repo_root: Path, study_config: Path) -> dict[str, Path]:
    """The files a node needs: `PIPELINE_PATTERNS` under `repo_root` plus the study config."""
    files = collect_files(repo_root, PIPELINE_PATTERNS)
    if "Snakefile" not in files:
        raise SpecError(
            f"pipeline repository {repo_root}: no Snakefile; point at the repository root"
        )
    if not study_config.is_file():
        raise SpecError(f"study config {study_config}: not a file")
    files[STUDY_CONFIG_NAME] = study_config
    return files


def pipeline_workflow_digest(repo_root: Path = REPO_ROOT) -> str:
    """The workflow digest of the pipeline in `repo_root`: what a node admin approves, and what
    every task built from this pipeline carries (the study config is not part of it)."""
    files = collect_files(repo_root, PIPELINE_PATTERNS)
    entries = {
        name: FileEntry(sha256_file(path), path.stat().st_size) for name, path in files.items()
    }
    return workflow_digest(Manifest(entries))


def pack_bundle(
    files: Mapping[str, Path],
    out_path: Path,
    metadata: Mapping[str, Any] | None = None,
    *,
    limits: BundleLimits = DEFAULT_LIMITS,
) -> Manifest:
    """Write a deterministic bundle of `files` (arcname -> path) to `out_path`; return its manifest.

    Each file is read once and the same bytes are hashed and archived. The bundle must pass the
    limits a node applies, so a coordinator never ships what every node would refuse.
    """
    contents: dict[str, bytes] = {}
    for name in sorted(files):
        problem = name_problem(name) or reserved_problem(name)
        if problem:
            raise BundleError(f"bundle file name {show_name(name)} {problem}; rename the file")
        contents[name] = _read_regular_file(files[name], limits)
    entries = {name: FileEntry(_sha256(data), len(data)) for name, data in contents.items()}
    manifest = Manifest(entries, dict(metadata or {}))
    manifest_bytes = manifest.canonical_bytes
    label = f"bundle {out_path}"
    _check_limit(label, "members", len(contents) + 1, "max_members", limits.max_members)
    total = sum(entry.size for entry in entries.values())
    _check_limit(label, "bytes in files", total, "max_total_bytes", limits.max_total_bytes)
    size, limit = len(manifest_bytes), limits.max_manifest_bytes
    _check_limit(label, "manifest bytes", size, "max_manifest_bytes", limit)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{out_path.name}.", dir=out_path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, data in [(MANIFEST_NAME, manifest_bytes), *contents.items()]:
                    tar.addfile(_member_header(name, len(data)), io.BytesIO(data))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, out_path)  # readers see no bundle or a whole one
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise BundleError(f"{label}: cannot write ({error.strerror}); not written") from None
        raise
    return manifest


def _check_limit(label: str, what: str, value: int, limit_name: str, limit: int) -> None:
    if value > limit:
        raise BundleError(f"{label}: {value} {what} > {limit_name}={limit}; not written")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _member_header(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, 0, 0o644, tarfile.REGTYPE
    info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
    return info


def _read_regular_file(path: Path, limits: BundleLimits) -> bytes:
    # O_NONBLOCK: opening a fifo must fail the S_ISREG check below, not hang the coordinator.
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise SpecError(f"bundle input {path}: cannot read ({error.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise BundleError(f"bundle input {path}: not a regular file; only files are bundled")
        with os.fdopen(os.dup(descriptor), "rb") as handle:
            data = handle.read(limits.max_file_bytes + 1)  # +1: a file that grew is caught
    finally:
        os.close(descriptor)
    label, limit = f"bundle input {path}", limits.max_file_bytes
    _check_limit(label, "bytes or more", len(data), "max_file_bytes", limit)
    return data


def inspect_bundle(tar_path: Path, limits: BundleLimits = DEFAULT_LIMITS) -> Manifest:
    """Check everything about a bundle without writing anything; return its manifest."""
    with _open_archive(tar_path, limits) as (tar, archive_size):
        manifest, _ = _inspect_open_archive(tar, archive_size, f"bundle {tar_path}", limits)
    return manifest


def unpack_bundle(
    tar_path: Path,
    dest: Path,
    expected_manifest_digest: str,
    limits: BundleLimits = DEFAULT_LIMITS,
) -> Manifest:
    """Inspect, check the manifest digest against the signed one, then write the files to `dest`.

    `dest` must not exist. Files are written into a temporary sibling directory that is renamed
    to `dest` only when every file is written and re-verified; on any failure nothing is left.
    """
    label = f"bundle {tar_path}"
    expected = expected_manifest_digest
    if not (isinstance(expected, str) and SHA256_HEX.fullmatch(expected)):
        raise _refused(label, f"signed manifest digest {expected!r} is not 64 lowercase hex")
    if os.path.lexists(dest):
        raise _refused(label, f"destination {dest} already exists; unpack into a fresh path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _open_archive(tar_path, limits) as (tar, archive_size):
        manifest, members = _inspect_open_archive(tar, archive_size, label, limits)
        if manifest.digest != expected:
            problem = f"manifest digest {manifest.digest} != signed digest {expected}"
            raise _refused(label, problem)
        staging = tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
        try:
            for name, entry in manifest.files.items():
                _write_member(tar, members[name], Path(staging), entry, label)
            os.chmod(staging, 0o755)
            os.rename(staging, dest)  # fails if a non-empty `dest` appeared meanwhile
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, OSError):
                raise _refused(label, f"cannot write {dest} ({error.strerror})") from None
            raise
    return manifest


def _refused(label: str, problem: str) -> BundleError:
    return BundleError(f"{label}: {problem}; refused, nothing extracted")


@contextmanager
def _open_archive(tar_path: Path, limits: BundleLimits) -> Iterator[tuple[tarfile.TarFile, int]]:
    label = f"bundle {tar_path}"
    try:
        handle = open(tar_path, "rb")  # noqa: SIM115 - closed by the `with` below
    except OSError as error:
        raise _refused(label, f"cannot read ({error.strerror})") from None
    with handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _refused(label, "not a regular file")
        if info.st_size > limits.max_archive_bytes:
            limit = limits.max_archive_bytes
            raise _refused(label, f"{info.st_size} bytes > max_archive_bytes={limit}")
        try:
            # "r:" reads plain tar only: a compressed stream would hide its real size.
            with tarfile.open(fileobj=handle, mode="r:") as tar:
                yield tar, info.st_size
        except (tarfile.TarError, EOFError, UnicodeError, ValueError, OverflowError) as error:
            raise _refused(label, f"not a readable tar archive ({error})") from None


def _inspect_open_archive(
    tar: tarfile.TarFile, archive_size: int, label: str, limits: BundleLimits
) -> tuple[Manifest, dict[str, tarfile.TarInfo]]:
    members: dict[str, tarfile.TarInfo] = {}
    total = 0
    while (member := tar.next()) is not None:  # one header at a time: stop at the first problem
        name = member.name
        if len(members) + 1 > limits.max_members:
            limit = limits.max_members
            raise _refused(label, f"more than {limit} members > max_members={limit}")
        problem = name_problem(name)
        if problem:
            raise _refused(label, f"member {show_name(name)} {problem}")
        if member.type not in ALLOWED_TYPES or member.sparse is not None:
            kind = TYPE_NAMES.get(member.type, f"of tar type {member.type!r}")
            link = f" -> {show_name(member.linkname)}" if member.issym() or member.islnk() else ""
            problem = f"member {show_name(name)} is {kind}{link}; only regular files are allowed"
            raise _refused(label, problem)
        if name in members:
            raise _refused(label, f"member {show_name(name)} appears twice")
        is_manifest = name == MANIFEST_NAME
        limit = limits.max_manifest_bytes if is_manifest else limits.max_file_bytes
        if member.size > limit:
            limit_name = "max_manifest_bytes" if is_manifest else "max_file_bytes"
            raise _refused(
                label, f"member {show_name(name)} is {member.size} bytes > {limit_name}={limit}"
            )
        total += member.size
        if total > limits.max_total_bytes:
            limit = limits.max_total_bytes
            raise _refused(label, f"members total at least {total} bytes > max_total_bytes={limit}")
        if member.offset_data + member.size > archive_size:
            raise _refused(
                label, f"member {show_name(name)} is cut short by the end of the archive"
            )
        members[name] = member
    _check_only_padding_after(tar, archive_size, label)
    check_name_set(members, label)
    if MANIFEST_NAME not in members:
        raise _refused(label, f"no {MANIFEST_NAME}")
    try:
        manifest = Manifest.from_bytes(_read_member(tar, members[MANIFEST_NAME]))
    except BundleError as error:
        raise _refused(label, str(error)) from None
    in_archive = set(members) - {MANIFEST_NAME}
    for name in sorted(in_archive - set(manifest.files)):
        raise _refused(label, f"file {show_name(name)} is in the archive but not in the manifest")
    for name in sorted(set(manifest.files) - in_archive):
        raise _refused(label, f"the manifest lists {show_name(name)} but the archive lacks it")
    for name, entry in manifest.files.items():
        _verify_member(tar, members[name], entry, label, sink=None)
    return manifest, members


def _check_only_padding_after(tar: tarfile.TarFile, archive_size: int, label: str) -> None:
    # tarfile stops quietly at the first unreadable header; whatever follows must be zero
    # padding, or the archive carries content that no check has seen.
    handle = tar.fileobj
    assert handle is not None
    position = tar.offset
    handle.seek(position)
    while chunk := handle.read(READ_CHUNK):
        if chunk.strip(b"\x00"):
            raise _refused(
                label, f"bytes after the last member (from byte {position}) are not tar padding"
            )
        position += len(chunk)
    if position != archive_size:
        raise _refused(
            label, f"archive size changed while it was read ({archive_size} -> {position})"
        )


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    stream = tar.extractfile(member)
    assert stream is not None  # regular files always have a stream
    return stream.read(member.size)


def _verify_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    entry: FileEntry,
    label: str,
    sink: IO[bytes] | None,
) -> None:
    """Hash a member's bytes (copying them to `sink`) and compare with its manifest entry."""
    name = show_name(member.name)
    if member.size != entry.size:
        raise _refused(label, f"file {name} is {member.size} bytes != manifest {entry.size}")
    stream = tar.extractfile(member)
    assert stream is not None
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(READ_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    if size != entry.size:
        raise _refused(label, f"file {name} gave {size} bytes != manifest {entry.size}")
    if digest.hexdigest() != entry.sha256:
        raise _refused(label, f"file {name} sha256 {digest.hexdigest()} != manifest {entry.sha256}")


def _write_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path, entry: FileEntry, label: str
) -> None:
    # Names were vetted by inspection and `staging` is new and ours, so each path stays inside
    # it; O_EXCL | O_NOFOLLOW still refuse to write through anything already there.
    target = staging / member.name
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with os.fdopen(os.open(target, flags, 0o644), "wb") as sink:
        # Verified again while writing: the archive may have changed since it was inspected.
        _verify_member(tar, member, entry, label, sink=sink)
