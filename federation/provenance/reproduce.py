"""`federation reproduce CRATE --out DIR`: re-run the coordinator's side of a study and compare.

From the crate's released node files it re-runs every recorded coordinator step (harmonisation
and meta-analysis per GWAS, pooled allele frequencies) with the recorded options, into DIR, and
compares each output with the recorded one: byte-identical, or a named difference. Sidecars are
compared too, apart from what names a place or a day (input paths, the file's date). Before
running it says where the installed software differs from the recorded versions, since a
difference there may change the bytes. A real node's data never leaves the node: its part of
the study is verified (`federation verify`), not re-run; for synthetic cohorts the sandbox
re-runs the nodes too (`federation.sandbox.reproduce`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.files import sha256_file
from federation.meta.frequencies import pool_frequency_files
from federation.meta.options import MetaOptions, Scheme, parse_maf_band
from federation.meta.runner import run_meta
from federation.provenance.crate import META_KIND, MetaRun, read_meta_runs
from federation.provenance.sidecars import find_sidecar, read_sidecar_of
from federation.provenance.verify import study_folder
from federation.versions import IDENTITY_KEY, software_versions

# Sidecar fields that name a place or a time, not a result: left out of the comparison.
VOLATILE_FIELDS = frozenset(
    {
        "date_metadata_last_modified",
        "data_file_name",
        "provenance_sha256",  # a node run's record names its paths and times
        "run_crate_sha256",  # and so does the Run Crate made from it
    }
)
VOLATILE_INPUT_FIELDS = frozenset({"path"})
Progress = Callable[[str], None]


@dataclass
class Comparison:
    identical: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    not_rerun: list[str] = field(default_factory=list)
    version_notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.different


def recorded_versions(study_dir: Path) -> dict[str, str]:
    """The software versions the study's meta-analysis sidecars recorded (first one wins)."""
    for run in read_meta_runs(study_dir):
        versions = read_sidecar_of(study_dir / run.output).get("software_versions")
        if isinstance(versions, Mapping):
            return {str(name): str(value) for name, value in versions.items()}
    return {}


def version_differences(recorded: Mapping[str, str]) -> list[str]:
    """One line per recorded distribution whose installed version differs."""
    installed = software_versions()
    lines = []
    for name, version in sorted(recorded.items()):
        now = installed.get(name)
        if now != version:
            lines.append(
                f"software version differs: {name} recorded {version}, installed {now or 'none'}; "
                "results may differ"
            )
    return lines


def meta_options(options: Mapping[str, Any]) -> MetaOptions:
    """The options a crate recorded (`crate.options_record`) as MetaOptions."""
    return MetaOptions(
        random_effects=bool(options.get("random_effects", False)),
        genomic_control=bool(options.get("genomic_control", False)),
        scheme=Scheme(options.get("scheme", Scheme.IVW.value)),
        palindromic_maf_band=parse_maf_band(str(options.get("palindromic_maf_band", "0.4-0.6"))),
    )


def comparable_sidecar(document: Mapping[str, Any]) -> dict[str, Any]:
    kept = {key: value for key, value in document.items() if key not in VOLATILE_FIELDS}
    if isinstance(kept.get("inputs"), list):
        kept["inputs"] = [
            {k: v for k, v in item.items() if k not in VOLATILE_INPUT_FIELDS}
            if isinstance(item, Mapping)
            else item
            for item in kept["inputs"]
        ]
    if isinstance(kept.get("dropped_rows"), Mapping):  # keyed by input path
        kept["dropped_rows"] = sorted(kept["dropped_rows"].values())
    kept.pop(IDENTITY_KEY, None)  # the code identity may name another checkout
    return kept


def compare_file(recorded: Path, reproduced: Path, label: str, result: Comparison) -> None:
    """Byte comparison of a table, and of its sidecar apart from paths and dates."""
    if not reproduced.is_file():
        result.different.append(f"{label}: not reproduced")
        return
    if sha256_file(recorded) != sha256_file(reproduced):
        result.different.append(
            f"{label}: differs (sha256 {sha256_file(reproduced)[:12]}..., "
            f"recorded {sha256_file(recorded)[:12]}...)"
        )
        return
    result.identical.append(f"{label}: byte-identical")
    if find_sidecar(recorded) is None:
        return
    before = comparable_sidecar(read_sidecar_of(recorded))
    after = comparable_sidecar(read_sidecar_of(reproduced))
    changed = sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
    if changed:
        result.different.append(f"{label} sidecar: differs in {', '.join(changed)}")


def rerun_meta(run: MetaRun, inputs: list[Path], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if run.kind == META_KIND:
        run_meta(inputs, out, meta_options(run.options))
    else:
        pool_frequency_files(inputs, out)


def reproduce_coordinator(
    crate_or_dir: Path,
    out_dir: Path,
    *,
    inputs_dir: Path | None = None,
    progress: Progress = print,
) -> Comparison:
    """Re-run every recorded coordinator step into `out_dir` and compare with the crate.

    `inputs_dir` replaces the study folder as the place of the node files (the sandbox passes
    its re-run nodes' releases); by default the crate's released files are the inputs.
    """
    study_dir = study_folder(crate_or_dir)
    result = Comparison()
    result.version_notes = version_differences(recorded_versions(study_dir))
    for line in result.version_notes:  # said before anything runs
        progress(line)
    runs = read_meta_runs(study_dir)
    if not runs:
        result.different.append(f"{study_dir}: the crate records no coordinator runs")
        return result
    source = inputs_dir or study_dir
    for run in runs:
        inputs = [source / path for path in run.inputs]
        missing = [str(path) for path in inputs if not path.is_file()]
        if missing:
            result.different.append(f"{run.output}: input {missing[0]} missing; not re-run")
            continue
        progress(f"re-running {run.kind} of '{run.analysis_id}' over {len(inputs)} inputs")
        rerun_meta(run, inputs, out_dir / run.output)
        compare_file(study_dir / run.output, out_dir / run.output, run.output, result)
    result.not_rerun.append(
        "node pipelines: a real node's data never leaves the node; their releases are verified "
        "(`federation verify`), not re-run"
    )
    return result
