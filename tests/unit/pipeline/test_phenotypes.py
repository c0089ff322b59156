from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from federation.errors import SpecError
from federation.pipeline.phenotypes import (
    check_binary,
    check_variance,
    read_phenotypes,
    require_columns,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.tsv"
    path.write_text(text)
    return path


def test_reads_sample_ids_as_strings(tmp_path):
    frame = read_phenotypes(_write(tmp_path, "sample_id\tage\n001\t40\n002\tNA\n"))
    assert list(frame.index) == ["001", "002"] and frame["age"].isna().tolist() == [False, True]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id\tage\nA\t1\n", "no 'sample_id' column"),
        ("sample_id\tage\nA\t1\nA\t2\n", "'A' appears twice"),
        ("sample_id\tage\n", "no rows"),
    ],
)
def test_bad_tables(tmp_path, text, expected):
    with pytest.raises(SpecError, match=expected):
        read_phenotypes(_write(tmp_path, text))


def test_missing_and_non_numeric_columns(tmp_path):
    path = _write(tmp_path, "sample_id\tage\tsite\nA\t1\tx\n")
    frame = read_phenotypes(path)
    with pytest.raises(SpecError, match="phenotype column 'bmi' not found"):
        require_columns(frame, ["age", "bmi"], "analysis 'q'", path)
    with pytest.raises(SpecError, match="'site' is not numeric"):
        require_columns(frame, ["site"], "analysis 'q'", path)


def test_binary_coding():
    check_binary(pd.Series([0, 1, 1, None]), "t2d", "a")
    with pytest.raises(SpecError, match="value 2; code controls as 0"):
        check_binary(pd.Series([1, 2]), "t2d", "a")
    with pytest.raises(SpecError, match="only controls"):
        check_binary(pd.Series([0, 0]), "t2d", "a")


def test_constant_covariate_is_refused():
    frame = pd.DataFrame({"age": [30.0, 40.0], "batch": [1.0, 1.0]})
    check_variance(frame, ["age"], "a")
    with pytest.raises(
        SpecError, match="covariate 'batch' has no variance among the 2 analysed samples"
    ):
        check_variance(frame, ["age", "batch"], "a")
