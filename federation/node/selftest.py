"""`federation node selftest`: a disclosure conformance suite a node operator runs on the node.

It feeds the installed gate canonical disclosive outputs (`selftest_cases`) and attack
inputs (unsigned or forged task envelopes, archives that escape their folder, an edited
audit log), each in a scratch copy of the node, and reports pass or fail per case. With a
node config it also checks the node's own audit log and privacy-ledger secret. Nothing in
the node's real work dir, ledger or audit log is written.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import __version__
from federation.audit import append_event, verify_log
from federation.errors import BundleError, PolicyViolation
from federation.jsonio import canonical_json
from federation.node.policy import NodePolicy
from federation.node.selftest_cases import DISCLOSURE_CASES, CaseFailed, Scratch
from federation.protocol.bundle import inspect_bundle
from federation.protocol.manifest import MANIFEST_NAME, FileEntry, Manifest
from federation.protocol.messages import TASK_FORMAT
from federation.protocol.signing import TrustStore, sign_document
from federation.release.rules import ENV_OVERRIDE_PREFIX, DisclosurePolicy, environment_overrides
from federation.settings import NodeSettings, node_from_dict

COORDINATOR = "selftest-coordinator"


@dataclass(frozen=True)
class CaseResult:
    name: str
    expectation: str
    passed: bool
    detail: str


# ---------------------------------------------------------------- attack inputs


def _policy(node_id: str, key: Ed25519PrivateKey) -> NodePolicy:
    trust = TrustStore({COORDINATOR: key.public_key()}, source="selftest trusted coordinators")
    return NodePolicy(node_id, trust, frozenset({"0" * 64}), timedelta(hours=1))


def _payload(node_id: str) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "format": TASK_FORMAT,
        "study_id": "selftest",
        "task_id": "t1",
        "node_id": node_id,
        "sequence": 1,
        "issued_at": now.isoformat(timespec="seconds"),
        "expires_at": (now + timedelta(minutes=30)).isoformat(timespec="seconds"),
        "bundle_sha256": "0" * 64,
        "manifest_digest": "0" * 64,
        "workflow_digest": "0" * 64,
        "federation_version": __version__,
        "engine": "snakemake",
    }


def _refused_envelope(make: Callable[[str, Ed25519PrivateKey], bytes]) -> Callable[[Scratch], str]:
    def case(s: Scratch) -> str:
        key = Ed25519PrivateKey.generate()
        policy = _policy(s.node.node_id, key)
        genuine = canonical_json(sign_document(_payload(s.node.node_id), key, COORDINATOR))
        policy.verify_envelope(genuine, "t1", datetime.now(UTC))  # the control must pass
        try:
            policy.verify_envelope(make(s.node.node_id, key), "t1", datetime.now(UTC))
        except PolicyViolation as error:
            return f"refused: {str(error)[:90]}"
        raise CaseFailed("the forged envelope was accepted")

    return case


def _unsigned(node_id: str, _: Ed25519PrivateKey) -> bytes:
    return canonical_json(_payload(node_id))


def _unpinned_key(node_id: str, _: Ed25519PrivateKey) -> bytes:
    return canonical_json(
        sign_document(_payload(node_id), Ed25519PrivateKey.generate(), COORDINATOR)
    )


def _edited_after_signing(node_id: str, key: Ed25519PrivateKey) -> bytes:
    document = sign_document(_payload(node_id), key, COORDINATOR)
    document["payload"]["workflow_digest"] = "f" * 64
    return canonical_json(document)


def _archive(member: tarfile.TarInfo, data: bytes | None) -> Callable[[Scratch], str]:
    def case(s: Scratch) -> str:
        manifest = Manifest({"Snakefile": FileEntry("0" * 64, 0)})
        path = s.root / "attack.tar"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            header = tarfile.TarInfo(MANIFEST_NAME)
            header.size = len(manifest.canonical_bytes)
            tar.addfile(header, io.BytesIO(manifest.canonical_bytes))
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
        try:
            inspect_bundle(path)
        except BundleError as error:
            escaped = (s.root.parent / "evil").exists() or (s.root / "evil").exists()
            if escaped:
                raise CaseFailed("refused, but a file was written outside the bundle") from None
            return f"refused: {str(error)[:90]}"
        raise CaseFailed(f"archive with member '{member.name}' accepted")

    return case


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 4 if kind == tarfile.REGTYPE else 0
    return info


def _tampered_audit_log(s: Scratch) -> str:
    log = s.root / "audit-copy.jsonl"
    for index in range(3):
        append_event(log, "release_written", node_id=s.node.node_id, rows=index)
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace('"rows":1', '"rows":0')
    log.write_text("\n".join(lines) + "\n")
    result = verify_log(log)
    if result.intact or result.index != 1:
        raise CaseFailed(f"an edited record 1 was not found: {result.summary()}")
    return result.problem or ""


ATTACK_CASES: list[tuple[str, str, Callable[[Scratch], str]]] = [
    ("unsigned envelope", "task refused", _refused_envelope(_unsigned)),
    ("unpinned signing key", "task refused", _refused_envelope(_unpinned_key)),
    ("envelope edited after signing", "task refused", _refused_envelope(_edited_after_signing)),
    ("'../' archive member", "bundle refused", _archive(_member("../evil"), b"evil")),
    ("absolute archive member", "bundle refused", _archive(_member("/tmp/evil"), b"evil")),
    (
        "symlink archive member",
        "bundle refused",
        _archive(_member("evil", tarfile.SYMTYPE, "/etc/passwd"), None),
    ),
    ("edited audit record", "found by its index", _tampered_audit_log),
]


# ---------------------------------------------------------------- the installed node


def installation_results(node: NodeSettings) -> list[CaseResult]:
    results = []
    attempts = environment_overrides(os.environ)
    results.append(
        CaseResult(
            "environment",
            f"no {ENV_OVERRIDE_PREFIX}* variables",
            not attempts,
            f"set (ignored by the gate; remove): {', '.join(attempts)}" if attempts else "clean",
        )
    )
    if node.federation is not None and node.federation.audit_log.exists():
        check = verify_log(node.federation.audit_log)
        results.append(
            CaseResult("node audit log", "hash chain intact", check.intact, check.summary())
        )
    secret = node.privacy_secret or node.work_dir / "privacy-ledger.secret"
    if secret.exists():
        mode = secret.stat().st_mode & 0o777
        results.append(
            CaseResult("privacy ledger secret", "mode 0600", not mode & 0o077, f"mode {mode:o}")
        )
    return results


def _scratch(node: NodeSettings, root: Path, policy: DisclosurePolicy) -> Scratch:
    root.mkdir(parents=True, exist_ok=True)
    scratch = replace(
        node,
        work_dir=root / "work",
        results_dir=root / "released",
        privacy_ledger=None,
        privacy_secret=None,
    )  # the real ledger is never touched
    return Scratch(root, scratch, policy)


def run_selftest(
    node: NodeSettings | None = None, only: Collection[str] | None = None
) -> list[CaseResult]:
    """Run every case (or those named in `only`) against `node`'s policy (built-in defaults
    without a node), then the checks of the installed node."""
    with tempfile.TemporaryDirectory(prefix="federation-selftest-") as scratch_dir:
        base = Path(scratch_dir)
        if node is None:
            document = {
                "node_id": "selftest",
                "phenotypes": "p.tsv",
                "genotypes": {"format": "vcf", "path": "g.vcf.bgz"},
            }
            node = node_from_dict(document, base)
        policy = DisclosurePolicy().tightened(node.disclosure, f"node '{node.node_id}' config")
        results = []
        for index, (name, expectation, case) in enumerate([*DISCLOSURE_CASES, *ATTACK_CASES]):
            if only is not None and name not in only:
                continue
            scratch = _scratch(node, base / f"case-{index:02d}", policy)
            try:
                results.append(CaseResult(name, expectation, True, case(scratch)))
            except CaseFailed as failure:
                results.append(CaseResult(name, expectation, False, str(failure)))
            except Exception as error:  # a crash is a failed case, with where it happened
                where = traceback.extract_tb(error.__traceback__)[-1]
                detail = (
                    f"{type(error).__name__}: {error} ({Path(where.filename).name}:{where.lineno})"
                )
                results.append(CaseResult(name, expectation, False, detail))
    return results + installation_results(node)


def format_results(results: list[CaseResult]) -> str:
    width = max(len(r.name) for r in results)
    expect = max(len(r.expectation) for r in results)
    lines = [f"{'case':<{width}}  {'expectation':<{expect}}  result  detail"]
    for r in results:
        detail = r.detail.replace("\n", " ")[:120]
        lines.append(
            f"{r.name:<{width}}  {r.expectation:<{expect}}  {'PASS' if r.passed else 'FAIL':<6}  {detail}"
        )
    failed = sum(not r.passed for r in results)
    lines.append(
        f"{len(results) - failed} of {len(results)} cases passed"
        + (f"; {failed} FAILED" if failed else "")
    )
    return "\n".join(lines)
