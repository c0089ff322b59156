"""How the meta-analysis splits its work must never show in its output.

Inputs are parsed in blocks by a thread pool and bins are combined by forked worker processes;
these tests force many tiny blocks and the worker processes on small inputs and require the
very same bytes as one block and one process.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench.meta_anchors import UNDECLARED
from federation.errors import MetaAnalysisError
from federation.meta import runner as meta_runner
from federation.meta import spill as meta_spill
from federation.meta.runner import MetaOptions, run_meta


def write_study(path: Path, seed: int, junk_row: int | None = None) -> Path:
    """A study over chromosomes 1, 2 and 13 (several position bins) with some bad rows."""
    rng = np.random.default_rng(seed)
    n = 400
    frame = pd.DataFrame(
        {
            "chromosome": rng.choice(["1", "2", "13"], n),
            "base_pair_location": rng.integers(1, 60_000_000, n),
            "effect_allele": rng.choice(["A", "C"], n),
            "other_allele": "G",
            "beta": rng.normal(0, 0.1, n),
            "standard_error": rng.uniform(0.02, 0.1, n),
            "effect_allele_frequency": rng.uniform(0.05, 0.95, n),
            "p_value": 0.5,
            "n": 1000,
        }
    ).sort_values(["chromosome", "base_pair_location"])
    frame.iloc[::37, frame.columns.get_loc("standard_error")] = -1.0  # dropped: SE not positive
    text = frame.to_csv(sep="\t", index=False)
    if junk_row is not None:  # a non-numeric beta: counted as a missing value
        lines = text.splitlines()
        fields = lines[junk_row].split("\t")
        fields[4] = "abc"
        lines[junk_row] = "\t".join(fields)
        text = "\n".join(lines) + "\n"
    with gzip.open(path, "wt") as handle:
        handle.write(text)
    return path


@pytest.fixture
def studies(tmp_path: Path) -> list[Path]:
    return [
        write_study(tmp_path / f"study{i}.tsv.gz", seed=i, junk_row=100 if i == 1 else None)
        for i in range(3)
    ]


def run(studies: list[Path], out: Path) -> tuple[bytes, dict]:
    run_meta(studies, out, MetaOptions(random_effects=True, **UNDECLARED))
    record = yaml.safe_load(Path(f"{out}-meta.yaml").read_text())
    return out.read_bytes(), record["inputs"]


def test_tiny_blocks_and_worker_processes_give_the_same_bytes(
    tmp_path: Path, studies: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_bytes, plain_inputs = run(studies, tmp_path / "plain.tsv.gz")
    assert plain_inputs[1]["dropped"]["missing_value"] == 1  # the junk beta
    assert plain_inputs[0]["dropped"]["se_not_positive"] == 11

    monkeypatch.setattr(meta_spill, "READ_BLOCK_BYTES", 700)  # ~10 rows per block
    monkeypatch.setattr(meta_runner, "PARALLEL_MIN_ROWS", 0)  # bins in worker processes
    split_bytes, split_inputs = run(studies, tmp_path / "split.tsv.gz")
    assert split_bytes == plain_bytes
    assert split_inputs == plain_inputs


def test_a_worker_that_dies_is_reported_in_one_line(
    tmp_path: Path, studies: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def die(self: object, bin_id: int) -> None:
        os._exit(9)

    monkeypatch.setattr(meta_runner, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(meta_runner.BinJob, "__call__", die)
    out = tmp_path / "meta.tsv.gz"
    with pytest.raises(MetaAnalysisError, match="worker process died"):
        run_meta(studies, out, MetaOptions(**UNDECLARED))
    assert not out.exists()
    assert not list(tmp_path.glob(".meta-*"))  # the scratch directory is gone too


def test_a_truncated_input_stops_the_run_in_one_line_and_leaves_nothing(
    tmp_path: Path, studies: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from federation.errors import SpecError

    monkeypatch.setattr(meta_spill, "READ_BLOCK_BYTES", 700)  # blocks already queued when it fails
    data = studies[1].read_bytes()
    studies[1].write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "meta.tsv.gz"
    with pytest.raises(SpecError) as raised:
        run_meta(studies, out, MetaOptions(**UNDECLARED))
    message = str(raised.value)
    assert "\n" not in message
    assert f"input '{studies[1]}'" in message and "truncated or corrupt" in message
    assert not out.exists() and not list(tmp_path.glob(".meta-*"))


def test_a_meta_analysis_never_imports_pandas(tmp_path: Path, studies: list[Path]) -> None:
    """pyarrow imports pandas (~0.2 s of a core) whenever numpy arrays cross into Arrow its own
    way: the meta-analysis goes through `arrow_numpy`, in the main process and the workers."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from federation.meta import runner as meta_runner

        meta_runner.PARALLEL_MIN_ROWS = 0  # the workers are checked too
        combine = meta_runner.BinJob.__call__

        def checked(job, bin_id):
            assert "pandas" not in sys.modules, "a worker imported pandas"
            return combine(job, bin_id)

        meta_runner.BinJob.__call__ = checked
        inputs = [Path(p) for p in {[str(p) for p in studies]!r}]
        out = Path({str(tmp_path / "meta.tsv.gz")!r})
        options = meta_runner.MetaOptions(random_effects=True, **{UNDECLARED!r})
        meta_runner.run_meta(inputs, out, options)
        assert "pandas" not in sys.modules, "the main process imported pandas"
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "meta.tsv.gz").stat().st_size > 0
