from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.errors import SpecError
from federation.pipeline.phenotypes import (
    check_binary,
    check_variance,
    code_phenotypes,
    read_phenotypes,
    require_columns,
)
from federation.settings import PhenotypeCoding


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


# ---------------------------------------------------------------- coding rules


@pytest.mark.parametrize("text", ["NA", "", "."])
def test_na_empty_and_dot_are_missing(tmp_path, text):
    frame = read_phenotypes(_write(tmp_path, f"sample_id\tage\nA\t{text}\nB\t41\n"))
    assert frame["age"].isna().tolist() == [True, False]
    assert pd.api.types.is_numeric_dtype(frame["age"])


@pytest.mark.parametrize(
    ("codes", "value", "missing"),
    [((-9.0,), -9.0, True), ((-9.0,), -8.0, False), ((-9.0,), -10.0, False), ((), -9.0, False)],
)
def test_a_configured_code_is_missing_in_quantitative_traits_only(codes, value, missing):
    frame = pd.DataFrame({"ldl": [value, 3.5], "age": [value, 40.0]}, index=["A", "B"])
    coding = PhenotypeCoding(quantitative_missing=codes)
    coded = code_phenotypes(frame, coding, ["ldl"], Path("p.tsv"))
    assert bool(np.isnan(coded.loc["A", "ldl"])) is missing
    assert coded.loc["A", "age"] == value  # a covariate's -9 is a value (not a trait)
    assert coded.loc["B", "ldl"] == 3.5


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["true", "false", "NA"], [1.0, 0.0, None]),
        (["TRUE", "False", "true"], [1.0, 0.0, 1.0]),
    ],
)
def test_boolean_columns_are_coded_one_and_zero(tmp_path, cells, expected):
    rows = "".join(f"S{i}\t{cell}\t{i}\n" for i, cell in enumerate(cells))
    path = _write(tmp_path, "sample_id\tsmoker\tage\n" + rows)
    coded = code_phenotypes(read_phenotypes(path), PhenotypeCoding(), [], path)
    values = [None if np.isnan(v) else v for v in coded["smoker"]]
    assert values == expected
    require_columns(coded, ["smoker"], "analysis 'q'", path)  # numeric now


def test_a_column_with_one_non_boolean_word_stays_text_and_is_refused_as_a_covariate(tmp_path):
    path = _write(tmp_path, "sample_id\tsmoker\nA\ttrue\nB\tsometimes\n")
    coded = code_phenotypes(read_phenotypes(path), PhenotypeCoding(), [], path)
    with pytest.raises(SpecError, match="'smoker' is not numeric \\(value 'true'\\)"):
        require_columns(coded, ["smoker"], "analysis 'q'", path)


def test_sex_comes_from_the_configured_column_and_coding(tmp_path):
    path = _write(tmp_path, "sample_id\tisFemale\nA\ttrue\nB\tfalse\nC\tNA\n")
    coding = PhenotypeCoding(sex_column="isFemale", sex_coding={"true": "female", "false": "male"})
    coded = code_phenotypes(read_phenotypes(path), coding, [], path)
    assert coded["sex"].tolist()[:2] == [0.0, 1.0] and np.isnan(coded["sex"].iloc[2])


def test_plink_style_sex_codes_map_through_the_coding(tmp_path):
    path = _write(tmp_path, "sample_id\tSEX\nA\t2\nB\t1\n")
    coding = PhenotypeCoding(sex_column="SEX", sex_coding={"1": "male", "2": "female"})
    coded = code_phenotypes(read_phenotypes(path), coding, [], path)
    assert coded["sex"].tolist() == [0.0, 1.0]


def test_an_unmapped_sex_value_is_one_line_naming_column_value_and_fix(tmp_path):
    path = _write(tmp_path, "sample_id\tisFemale\nA\tyes\n")
    coding = PhenotypeCoding(sex_column="isFemale", sex_coding={"true": "female"})
    with pytest.raises(SpecError, match="sex column 'isFemale' has value 'yes'.*sex_coding") as e:
        code_phenotypes(read_phenotypes(path), coding, [], path)
    assert "\n" not in str(e.value)


def test_without_the_sex_column_nothing_is_added(tmp_path):
    path = _write(tmp_path, "sample_id\tage\nA\t1\n")
    coded = code_phenotypes(read_phenotypes(path), PhenotypeCoding(sex_column="isFemale"), [], path)
    assert "sex" not in coded.columns
