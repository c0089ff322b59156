"""StudySpec: a study's YAML, validated by config/schema/study.schema.json, as frozen objects.

A study says what every node computes (analyses, QC thresholds, stricter disclosure) and,
for the coordinator, which nodes take part. It never names node paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from federation.errors import SpecError
from federation.schema import load_document, validate


class TraitType(StrEnum):
    QUANTITATIVE = "quantitative"
    BINARY = "binary"


class Model(StrEnum):
    LINEAR = "linear"
    LOGISTIC = "logistic"


class MissingCovariates(StrEnum):
    """What happens to a sample missing a covariate value."""

    EXCLUDE = "exclude"  # left out of the analysis (its cohort shrinks)
    MEAN = "mean"  # the covariate's mean over the analysed samples: the cohort stays whole


class MissingGenotypes(StrEnum):
    """What a regression does with a sample that has no call at a variant."""

    MEAN = "mean"  # the variant's mean dosage over the analysed samples (Hail's default)
    EXCLUDE = "exclude"  # left out of that variant's fit, as plink2 --glm does


class LogisticTest(StrEnum):
    WALD = "wald"
    FIRTH = "firth"


@dataclass(frozen=True)
class QcThresholds:
    sample_call_rate_min: float
    variant_call_rate_min: float
    hwe_p_min: float
    maf_min: float
    sex_check: bool
    relatedness: bool = True
    kinship_max: float | None = None  # None: the node's relatedness.kinship_max
    info_min: float = 0.3  # imputed inputs: the usual MaCH r² / minimac R2 floor
    excluded_chromosomes: tuple[str, ...] = ("Y", "MT")


@dataclass(frozen=True)
class PcaSettings:
    min_maf: float
    max_variants: int


@dataclass(frozen=True)
class AlleleFrequencyAnalysis:
    id: str


@dataclass(frozen=True)
class GwasAnalysis:
    id: str
    trait: str
    trait_type: TraitType
    model: Model
    test: LogisticTest
    covariates: tuple[str, ...]
    principal_components: int
    missing_covariates: MissingCovariates = MissingCovariates.EXCLUDE
    missing_genotypes: MissingGenotypes = MissingGenotypes.MEAN

    @property
    def covariate_columns(self) -> tuple[str, ...]:
        """Covariates plus PC1..PCk, in the order they enter the model (intercept excluded)."""
        return self.covariates + tuple(f"PC{i}" for i in range(1, self.principal_components + 1))


@dataclass(frozen=True)
class StudySpec:
    study_id: str
    title: str
    reference_genome: str
    engine: str
    qc: QcThresholds
    pca: PcaSettings
    allele_frequencies: tuple[AlleleFrequencyAnalysis, ...]
    gwas: tuple[GwasAnalysis, ...]
    disclosure: dict[str, Any] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()
    quorum: int | None = None
    deadline: str | None = None
    analysis_ids: tuple[str, ...] = ()  # every analysis, in the order the study lists them
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_principal_components(self) -> int:
        return max((analysis.principal_components for analysis in self.gwas), default=0)

    def gwas_analysis(self, analysis_id: str) -> GwasAnalysis:
        for analysis in self.gwas:
            if analysis.id == analysis_id:
                return analysis
        known = ", ".join(a.id for a in self.gwas) or "none"
        raise SpecError(
            f"study '{self.study_id}': no GWAS analysis '{analysis_id}' (known: {known})"
        )


def _qc(entry: dict[str, Any]) -> QcThresholds:
    return QcThresholds(
        **{**entry, "excluded_chromosomes": tuple(entry.get("excluded_chromosomes", ("Y", "MT")))}
    )


def _gwas(entry: dict[str, Any]) -> GwasAnalysis:
    trait_type = TraitType(entry["trait_type"])
    default_model = Model.LINEAR if trait_type is TraitType.QUANTITATIVE else Model.LOGISTIC
    model = Model(entry.get("model", default_model.value))
    if trait_type is TraitType.BINARY and model is Model.LINEAR:
        raise SpecError(
            f"study config 'analyses.{entry['id']}.model': 'linear' for binary trait "
            f"'{entry['trait']}'; use model: logistic"
        )
    if trait_type is TraitType.QUANTITATIVE and model is Model.LOGISTIC:
        raise SpecError(
            f"study config 'analyses.{entry['id']}.model': 'logistic' for quantitative trait "
            f"'{entry['trait']}'; use model: linear or trait_type: binary"
        )
    missing_genotypes = MissingGenotypes(entry["missing_genotypes"])
    test = LogisticTest(entry["test"])
    firth = model is Model.LOGISTIC and test is LogisticTest.FIRTH
    if missing_genotypes is MissingGenotypes.EXCLUDE and firth:
        # Firth's penalised fit needs its null model refitted on each variant's called samples;
        # only the Wald fit is built per variant (plink2's no-Firth --glm checks it).
        raise SpecError(
            f"study config 'analyses.{entry['id']}.missing_genotypes': 'exclude' with "
            "test 'firth' is not available; use test: wald, or missing_genotypes: mean"
        )
    return GwasAnalysis(
        id=entry["id"],
        trait=entry["trait"],
        trait_type=trait_type,
        model=model,
        test=test,
        covariates=tuple(entry["covariates"]),
        principal_components=int(entry["principal_components"]),
        missing_covariates=MissingCovariates(entry["missing_covariates"]),
        missing_genotypes=missing_genotypes,
    )


def check_deadline(value: str | None, label: str) -> str | None:
    """An ISO 8601 time with a zone, or a one-line SpecError naming the value and the fix."""
    if value is None:
        return None
    example = "write e.g. 2026-12-31T23:59:00Z"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SpecError(
            f"{label} 'deadline': '{value}' is not an ISO 8601 time; {example}"
        ) from None
    if parsed.tzinfo is None:
        raise SpecError(f"{label} 'deadline': '{value}' has no time zone; add Z or +01:00")
    return value


def study_from_dict(document: Any, label: str = "study config") -> StudySpec:
    data = validate(document, "study", label)
    ids = [entry["id"] for entry in data["analyses"]]
    duplicates = sorted({analysis_id for analysis_id in ids if ids.count(analysis_id) > 1})
    if duplicates:
        raise SpecError(
            f"{label}: 'analyses': id '{duplicates[0]}' is used twice; give each analysis its own id"
        )
    return StudySpec(
        study_id=data["study_id"],
        title=data.get("title", data["study_id"]),
        reference_genome=data["reference_genome"],
        engine=data["engine"],
        qc=_qc(data["qc"]),
        pca=PcaSettings(**data["pca"]),
        allele_frequencies=tuple(
            AlleleFrequencyAnalysis(id=e["id"])
            for e in data["analyses"]
            if e["type"] == "allele_frequency"
        ),
        gwas=tuple(_gwas(e) for e in data["analyses"] if e["type"] == "gwas"),
        disclosure=dict(data.get("disclosure", {})),
        nodes=tuple(data.get("nodes", ())),
        quorum=data.get("quorum"),
        deadline=check_deadline(data.get("deadline"), label),
        analysis_ids=tuple(ids),
        raw=data,
    )


def load_study(path: Path) -> StudySpec:
    label = f"study config '{path}'"
    return study_from_dict(load_document(path, label), label)
