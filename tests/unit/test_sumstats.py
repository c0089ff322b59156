"""federation.sumstats: BGZF blocks, the tabix index, sidecar names and variant IDs."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
from pathlib import Path

import pandas as pd

from federation import sumstats


def _blocks(data: bytes) -> list[int]:
    """The total size of each BGZF block, read from its BC extra field."""
    sizes, offset = [], 0
    while offset < len(data):
        assert (
            data[offset : offset + 4] == b"\x1f\x8b\x08\x04"
            and data[offset + 12 : offset + 14] == b"BC"
        )
        size = struct.unpack("<H", data[offset + 16 : offset + 18])[0] + 1
        sizes.append(size)
        offset += size
    return sizes


def test_bgzf_blocks_stay_under_64_kib_even_when_incompressible_and_gzip_reads_them(
    tmp_path: Path,
) -> None:
    text = os.urandom(200_000) + b"A" * 300_000
    data = sumstats.bgzf_blocks(text) + sumstats.BGZF_EOF
    sizes = _blocks(data)
    assert max(sizes) <= sumstats.BGZF_MAX_BLOCK and len(sizes) == 9  # 8 data blocks + EOF
    assert gzip.decompress(data) == text
    path = tmp_path / "x.gz"
    path.write_bytes(data)
    subprocess.run(["bgzip", "--test", str(path)], check=True)  # htslib's own reader
    assert sumstats.bgzf_blocks(text) == sumstats.bgzf_blocks(text), "same text, same bytes"


def test_a_written_table_is_bgzf_with_a_tabix_index_tabix_can_query(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"chromosome": ["1"] * 3 + ["23"] * 2, "base_pair_location": [5, 50, 500, 7, 70]}
    )
    out = sumstats.write_table(frame, tmp_path / "t.tsv.gz", {"study_id": "s"})
    assert sumstats.table_files(out) == (
        out,
        tmp_path / "t.tsv.gz.tbi",
        tmp_path / "t.tsv.gz-meta.yaml",
    )
    assert all(path.is_file() for path in sumstats.table_files(out))
    done = subprocess.run(
        ["tabix", str(out), "1:40-600"], capture_output=True, text=True, check=True
    )
    assert done.stdout == "1\t50\n1\t500\n"
    assert sumstats.read_sidecar(out)["file_type"] == "GWAS-SSF v1.0"


def test_sidecars_are_found_under_the_gwas_ssf_name_first_then_the_old_one(tmp_path: Path) -> None:
    table = tmp_path / "a.tsv.gz"
    assert sumstats.find_sidecar(table) is None and sumstats.read_sidecar(table) == {}
    (tmp_path / "a.tsv.gz.yaml").write_text("node_id: old\n")
    assert sumstats.read_sidecar(table) == {"node_id": "old"}
    (tmp_path / "a.tsv.gz-meta.yaml").write_text("node_id: new\n")
    assert sumstats.find_sidecar(table) == sumstats.sidecar_path(table)
    assert sumstats.read_sidecar(table) == {"node_id": "new"}


def test_variant_ids_use_gwas_ssf_chromosome_codes_and_underscores() -> None:
    ids = sumstats.variant_id(
        pd.Series(["1", "chrX", "MT"]),
        pd.Series([10, 20, 30]),
        pd.Series(["A"] * 3),
        pd.Series(["G"] * 3),
    )
    assert ids.tolist() == ["1_10_A_G", "23_20_A_G", "25_30_A_G"]
