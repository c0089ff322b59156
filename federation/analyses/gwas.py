"""Genome-wide association on a node: linear (quantitative) and logistic (binary) regression.

Covariates enter with an explicit intercept. Besides the estimates, each variant carries the
counts the disclosure gate needs (analysed N, alternate allele count, minor-allele carriers
among cases and controls); the gate uses them and the release never contains them.
Missing genotypes are mean-imputed by Hail's regression methods (`missing_genotypes: mean`)
or, with `missing_genotypes: exclude`, the sample is left out of that variant's fit, as
plink2 does (linear: `hl.agg.linreg` over the called samples; logistic Wald: Hail's own
Newton fit and Wald test, `hail.methods.statgen`, on the called samples' design matrix). Samples without the trait or a covariate are left out of the
analysis (or get the covariate's mean), and `count_exclusions` says how many.
The genotype is the ALT dosage (imputed, or the hard call's ALT count), with males coded 0/2
on non-PAR chrX (`sex_chromosomes.coded_dosage`).
"""

from __future__ import annotations

from dataclasses import dataclass

import hail as hl
from hail.methods.statgen import logreg_fit, wald_test

from federation.analyses.export import variant_fields
from federation.analyses.sex_chromosomes import allele_counts, coded_dosage
from federation.analyses.thinning import keep_fraction_of_loci
from federation.errors import SpecError
from federation.spec import (
    GwasAnalysis,
    LogisticTest,
    MissingCovariates,
    MissingGenotypes,
    Model,
    PcaSettings,
    TraitType,
)

# Stopping rule of the logistic Newton iterations. Hail stops when the max |step| of the
# coefficients is below this, without taking that step, so it bounds how far each beta is
# from the maximum-likelihood estimate. Hail's default, 1e-6, left betas up to 4e-7 from a
# float64 refit (over 1e-4 relative for betas below 0.004); at 1e-10 they are within 4e-11,
# for ~0.7 more iterations per variant (3.2 -> 3.9 on average).
LOGISTIC_TOLERANCE = 1e-10
# Newton iteration cap of Hail's `logistic_regression_rows` for the Wald test (its default):
# the exclude path calls the same fitting function and must stop where the mean path stops.
MAX_WALD_ITERATIONS = 25


@dataclass(frozen=True)
class Exclusions:
    """What missing phenotypes did to an analysis's cohort (node-private; released rounded)."""

    samples_qc: int  # the QC cohort the analysis starts from
    samples_missing_trait: int
    samples_missing_covariates: int  # among those with the trait
    samples_dropped: int  # left out of the analysis
    samples_covariates_imputed: int  # kept with mean-imputed covariates


@dataclass(frozen=True)
class GwasDesign:
    """What the gate needs to know about the fitted model as a whole."""

    n_samples: int
    n_cases: int | None
    n_controls: int | None
    n_parameters: int  # intercept + covariates + genotype

    @property
    def residual_df(self) -> int:
        return self.n_samples - self.n_parameters


def principal_components(mt: hl.MatrixTable, k: int, settings: PcaSettings) -> hl.Table:
    """Top-k principal components (HWE-normalised genotypes) over common QC-passing autosomal
    variants: sex chromosomes would make sex a component (males are hemizygous on chrX)."""
    common = mt.filter_rows(mt.pass_gwas & mt.locus.in_autosome())
    common = hl.variant_qc(common)
    common = common.filter_rows(hl.min(common.variant_qc.AF) >= settings.min_maf)
    n_common = common.count_rows()
    if n_common > settings.max_variants:
        # Deterministic thinning: a fixed fraction by hash of the locus, not random sampling.
        common = common.filter_rows(
            keep_fraction_of_loci(common.locus, settings.max_variants / n_common)
        )
    # Randomised block Lanczos (as gnomAD uses) rather than ARPACK, which fails to converge
    # when a cohort has no structure and the top eigenvalues are nearly equal.
    _, scores, _ = hl._hwe_normalized_blanczos(
        common.GT, k=k, compute_loadings=False, q_iterations=10
    )
    return scores.select(**{f"PC{i + 1}": scores.scores[i] for i in range(k)})


def _value(field: hl.Expression) -> hl.Float64Expression:
    """A phenotype as a float, missing where the table had no value: pandas reads NA as NaN,
    which Hail would otherwise keep as a number and every regression would come out NaN."""
    value = hl.float64(field)
    return hl.or_missing(~hl.is_nan(value), value)


def analysis_samples(
    mt: hl.MatrixTable, analysis: GwasAnalysis, pcs: hl.Table | None
) -> hl.MatrixTable:
    """Samples with the trait and every covariate defined; covariates and y as col fields.

    With `missing_covariates: mean` a missing covariate value becomes that covariate's mean
    over the QC-passing samples that have the trait, so the analysed cohort is the QC cohort
    with the trait: fewer small cells against earlier releases.
    """
    fields = {name: _value(mt.pheno[name]) for name in (analysis.trait, *analysis.covariates)}
    if analysis.missing_covariates is MissingCovariates.MEAN and analysis.covariates:
        means = mt.aggregate_cols(
            hl.agg.filter(
                hl.is_defined(fields[analysis.trait]),
                hl.struct(**{name: hl.agg.mean(fields[name]) for name in analysis.covariates}),
            )
        )
        for name in analysis.covariates:
            if means[name] is not None:  # nobody has it: the variance check names it
                fields[name] = hl.coalesce(fields[name], hl.float64(means[name]))
    if pcs is not None:
        row = pcs[mt.s]
        fields.update(
            {f"PC{i}": row[f"PC{i}"] for i in range(1, analysis.principal_components + 1)}
        )
    mt = mt.annotate_cols(model=hl.struct(**fields))
    defined = hl.all(*[hl.is_defined(mt.model[name]) for name in fields])
    return mt.filter_cols(defined)


def count_exclusions(mt: hl.MatrixTable, analysis: GwasAnalysis) -> Exclusions:
    """How many QC samples lack the trait, or (having it) a covariate, and so are dropped or,
    with `missing_covariates: mean`, imputed. `mt` is the QC'd cohort with its `pheno`."""
    trait = hl.is_defined(_value(mt.pheno[analysis.trait]))
    covariates = hl.bool(True)
    for name in analysis.covariates:
        covariates &= hl.is_defined(_value(mt.pheno[name]))
    counts = mt.aggregate_cols(
        hl.struct(
            qc=hl.agg.count(),
            no_trait=hl.agg.count_where(~trait),
            no_covariate=hl.agg.count_where(trait & ~covariates),
        )
    )
    imputed = analysis.missing_covariates is MissingCovariates.MEAN
    return Exclusions(
        samples_qc=counts.qc,
        samples_missing_trait=counts.no_trait,
        samples_missing_covariates=counts.no_covariate,
        samples_dropped=counts.no_trait + (0 if imputed else counts.no_covariate),
        samples_covariates_imputed=counts.no_covariate if imputed else 0,
    )


def _gate_counts(mt: hl.MatrixTable, binary_trait: str | None) -> hl.StructExpression:
    """Per-variant counts on the analysed samples: called N, ALT allele count and allele number
    (a hemizygous male carries one allele on non-PAR chrX, although the regression codes him
    0/2: the gate's minor-allele count is of real alleles) and, for binary traits, minor-allele
    carriers among cases and controls."""
    alleles = allele_counts(mt)
    counts = {
        "n_called": hl.agg.count_where(hl.is_defined(mt.x)),
        "alt_allele_count": hl.agg.sum(alleles.alt),
        "allele_number": hl.agg.sum(alleles.alleles),
    }
    if binary_trait is not None:
        is_case = mt.model[binary_trait] == 1.0
        for group, selector in (("cases", is_case), ("controls", ~is_case)):
            counts[f"alt_carriers_{group}"] = hl.agg.count_where(selector & mt.GT.is_non_ref())
            counts[f"ref_carriers_{group}"] = hl.agg.count_where(
                selector & (mt.GT.n_alt_alleles() < 2)
            )
    return hl.struct(**counts)


def _check_covariate_variance(mt: hl.MatrixTable, analysis: GwasAnalysis) -> None:
    """Constant covariates make the model singular; the table-level check cannot see QC's effect."""
    spreads = mt.aggregate_cols(
        hl.struct(**{name: hl.agg.stats(mt.model[name]).stdev for name in analysis.covariates})
    )
    for name in analysis.covariates:
        if spreads[name] == 0:
            raise SpecError(
                f"analysis '{analysis.id}': covariate '{name}' has no variance among the QC-passing "
                "analysed samples; remove it from the covariates"
            )


def _linear_without_missing_calls(
    mt: hl.MatrixTable,
    y: hl.Float64Expression,
    x: hl.Int32Expression,
    covariates: list[hl.Expression | float],
) -> hl.Table:
    """Least squares per variant over the samples called there (plink2 --glm's missing-call
    rule): `hl.agg.linreg` (normal equations; t test with n - k df) on [1, x, covariates]."""
    predictors = [covariates[0], hl.float64(x), *covariates[1:]]
    mt = mt.annotate_rows(fit=hl.agg.filter(hl.is_defined(x), hl.agg.linreg(y, predictors)))
    fit = mt.rows()
    return fit.select(
        "gate",
        beta=fit.fit.beta[1],
        standard_error=fit.fit.standard_error[1],
        statistic=fit.fit.t_stat[1],
        p_value=fit.fit.p_value[1],
        n=fit.fit.n,
        converged=hl.is_defined(fit.fit.beta[1]) & hl.is_finite(fit.fit.standard_error[1]),
    )


def _logistic_without_missing_calls(
    mt: hl.MatrixTable,
    y: hl.Float64Expression,
    x: hl.Int32Expression,
    covariates: list[hl.Expression | float],
) -> hl.Table:
    """Logistic regression (Wald) per variant over the samples called there (plink2 --glm's
    missing-call rule): each variant's own design matrix [1, covariates, x] and outcome
    vector, fitted by Hail's own Newton-Raphson (`logreg_fit`, from the intercept-only start,
    as `logistic_regression_rows` runs it) and `wald_test`. A variant whose called samples
    cannot be fitted (one outcome only, or no more samples than parameters) gets no estimate
    (not converged)."""
    terms = [hl.float64(term) for term in (*covariates, x)]
    called = hl.agg.filter(hl.is_defined(x), hl.agg.collect(hl.struct(y=y, terms=terms)))
    fit = mt.annotate_rows(called=called).rows()
    n_called = hl.len(fit.called)
    cases = hl.sum(fit.called.map(lambda sample: sample.y))
    fittable = (n_called > len(terms)) & (cases > 0) & (cases < n_called)
    fit = fit.annotate(
        result=hl.or_missing(
            fittable,
            _wald(
                hl.nd.array(fit.called.map(lambda sample: sample.terms)),
                hl.nd.array(fit.called.map(lambda sample: sample.y)),
            ),
        )
    )
    return fit.select(
        "gate",
        **_logistic_columns(fit.result, LogisticTest.WALD),
        n=hl.len(fit.called),
        converged=_converged(fit.result),
    )


def _wald(
    design: hl.NDArrayNumericExpression, y: hl.NDArrayNumericExpression
) -> hl.StructExpression:
    """Hail's Wald test of the last column of `design` (the genotype)."""
    fit = logreg_fit(design, y, None, MAX_WALD_ITERATIONS, LOGISTIC_TOLERANCE)
    return wald_test(design, fit)


def _converged(result: hl.StructExpression) -> hl.BooleanExpression:
    return hl.coalesce(result.fit.converged & ~result.fit.exploded, False)


def _logistic_columns(result: hl.StructExpression, test: LogisticTest) -> dict[str, hl.Expression]:
    """beta, standard_error, statistic and p_value of a Wald or Firth result."""
    if test is LogisticTest.WALD:
        standard_error, statistic = result.standard_error, result.z_stat
    else:
        # Firth's test is a penalised likelihood-ratio test and reports no SE; like REGENIE
        # we give the SE that reproduces its chi-square (|beta| / sqrt(chi2)) for meta-analysis.
        standard_error = hl.abs(result.beta) / hl.sqrt(result.chi_sq_stat)
        statistic = result.chi_sq_stat
    return {
        "beta": result.beta,
        "standard_error": standard_error,
        "statistic": statistic,
        "p_value": result.p_value,
    }


def run_gwas(mt: hl.MatrixTable, analysis: GwasAnalysis) -> tuple[hl.Table, GwasDesign]:
    """Fit the analysis' model per variant. `mt` must already hold only the analysed samples."""
    binary = analysis.trait_type is TraitType.BINARY
    mt = mt.filter_rows(mt.pass_gwas)
    mt = mt.annotate_entries(x=coded_dosage(mt))
    mt = mt.annotate_rows(gate=_gate_counts(mt, analysis.trait if binary else None))
    y = mt.model[analysis.trait]
    covariates = [1.0, *[mt.model[name] for name in analysis.covariate_columns]]
    x = mt.x

    n_samples = mt.count_cols()
    if n_samples == 0:
        raise SpecError(
            f"analysis '{analysis.id}': no QC-passing sample has '{analysis.trait}' and all covariates; check the phenotypes"
        )
    _check_covariate_variance(mt, analysis)
    n_cases = n_controls = None
    if binary:
        n_cases = int(mt.aggregate_cols(hl.agg.count_where(y == 1.0)))
        n_controls = n_samples - n_cases

    exclude = analysis.missing_genotypes is MissingGenotypes.EXCLUDE
    if analysis.model is Model.LINEAR and exclude:
        fit = _linear_without_missing_calls(mt, y, x, covariates)
    elif analysis.model is Model.LINEAR:
        fit = hl.linear_regression_rows(y=y, x=x, covariates=covariates, pass_through=["gate"])
        fit = fit.select(
            "gate",
            beta=fit.beta,
            standard_error=fit.standard_error,
            statistic=fit.t_stat,
            p_value=fit.p_value,
            n=fit.n,
            converged=hl.is_defined(fit.beta),
        )
    elif exclude:
        fit = _logistic_without_missing_calls(mt, y, x, covariates)
    else:
        fit = hl.logistic_regression_rows(
            test=analysis.test.value,
            y=y,
            x=x,
            covariates=covariates,
            pass_through=["gate"],
            tolerance=LOGISTIC_TOLERANCE,
        )
        fit = fit.select(
            "gate",
            **_logistic_columns(fit, analysis.test),
            n=n_samples,
            converged=fit.fit.converged & ~fit.fit.exploded,
        )
    fit = fit.select(**variant_fields(fit), **fit.row_value)
    design = GwasDesign(
        n_samples=n_samples,
        n_cases=n_cases,
        n_controls=n_controls,
        n_parameters=len(covariates) + 1,
    )
    return fit, design
