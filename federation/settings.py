"""NodeSettings: a national node's own configuration (config/schema/node.schema.json);
CoordinatorSettings: the coordinator's (coordinator.schema.json), with the dashboard's tokens.

Paths in a node config are resolved relative to the config file, so an admin can keep the
config beside the data. Nothing here ever leaves the node. Dashboard tokens are checked when
the config is read (length, one per holder) and never shown in an error or a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from federation.errors import SpecError
from federation.files import REPO_ROOT
from federation.schema import load_document, validate

KNOWN_REFERENCE_GENOMES = ("GRCh37", "GRCh38")
# Common aliases users type; mapped only in the error message, never silently.
REFERENCE_ALIASES = {
    "hg19": "GRCh37",
    "b37": "GRCh37",
    "hg38": "GRCh38",
    "grch38": "GRCh38",
    "grch37": "GRCh37",
}


# The Snakemake profiles installed with the pipeline; a node may name its own directory instead.
INSTALLED_PROFILES = ("local", "slurm")
PROFILES_DIR = REPO_ROOT / "profiles"
MEMORY_UNITS_MB = {"m": 1, "g": 1024}  # "16g" -> 16384 MB, as Java and Slurm count


@dataclass(frozen=True)
class HailOptions:
    master: str = "local[2]"  # the Spark master (resources.spark_master replaces it)
    driver_memory: str = "4g"
    tmp_dir: Path | None = None
    executor_memory: str | None = None  # on a Spark cluster; None: Spark's default
    executor_cores: int | None = None  # on a Spark cluster; None: all of a worker's cores


# Hail's and KING's second-degree cut-off: kinship 2^-3.5 (Manichaikul et al. 2010, Table 1).
SECOND_DEGREE_KINSHIP = 0.0884
DEFAULT_SEX_CODING = {"0": "female", "1": "male"}


@dataclass(frozen=True)
class PhenotypeCoding:
    """How the node's phenotype table writes missing values and sex (NA, empty and '.' are
    always missing; `quantitative_missing` adds codes such as PLINK's -9 for quantitative traits)."""

    quantitative_missing: tuple[float, ...] = ()
    sex_column: str = "sex"
    sex_coding: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SEX_CODING))


@dataclass(frozen=True)
class ReferenceCheck:
    """The REF-allele check against `reference_fasta` (`analyses.reference`)."""

    max_mismatch_rate: float = 0.02  # strand-ambiguous or damaged sites: a few percent at most
    sample_variants: int = 2000


@dataclass(frozen=True)
class NodeResources:
    """What the node gives the pipeline: passed by the agent (and `run-pipeline`) to every run."""

    cores: int = 2
    memory_mb: int | None = None  # None: the profile's own budget
    profile: str = "local"  # as written: local, slurm or a path
    profile_dir: Path = PROFILES_DIR / "local"


@dataclass(frozen=True)
class NodeFederation:
    """How the node takes part in studies: its mailbox, key, pinned coordinators, approvals."""

    mailbox: dict[str, Any]
    signing_key: Path
    trusted_coordinators: dict[str, Path]
    approved_workflows: frozenset[str]  # digests approved for any study
    max_task_age_hours: float
    ledger: Path
    audit_log: Path
    # Crypt4GH public key per trusted coordinator: results leave encrypted for the task's signer.
    coordinator_encryption_keys: dict[str, Path] = field(default_factory=dict)
    # (digest, envelope as written) per approval inside a parameter envelope
    workflow_envelopes: tuple[tuple[str, dict[str, Any]], ...] = ()
    unapproved_workflows: str = "hold"  # hold (for the admin) or refuse
    output_review: str = "none"  # none, one or two reviewers before a release leaves
    reviewers: dict[str, Path] = field(default_factory=dict)  # name -> ed25519 .pub
    policy_interval_minutes: float = 60.0
    cancel_poll_seconds: float = 30.0


@dataclass(frozen=True)
class NodeSettings:
    node_id: str
    genotype_format: str
    genotype_path: Path
    phenotypes: Path
    reference_genome: str
    work_dir: Path
    results_dir: Path
    hail: HailOptions
    resources: NodeResources = NodeResources()
    reference_fasta: Path | None = None
    dbsnp_vcf: Path | None = None  # bgzipped, tabix-indexed: released GWAS files get `rsid`
    phenotype_coding: PhenotypeCoding = PhenotypeCoding()
    kinship_max: float = SECOND_DEGREE_KINSHIP
    reference_check: ReferenceCheck = ReferenceCheck()
    disclosure: dict[str, Any] = field(default_factory=dict)
    federation: NodeFederation | None = None
    config_dir: Path | None = None
    privacy_ledger: Path | None = None  # None: work_dir/privacy-ledger.sqlite
    privacy_secret: Path | None = None  # None: work_dir/privacy-ledger.secret
    genotype_sample: Path | None = None  # BGEN's .sample; None: the .bgen path with .sample
    dosage_field: str | None = None  # VCF: DS or GP for imputed dosages; None: GT hard calls


def check_reference_genome(name: str, label: str) -> str:
    if name in KNOWN_REFERENCE_GENOMES:
        return name
    alias = REFERENCE_ALIASES.get(name.lower())
    fix = f"write {alias}" if alias else f"use one of {', '.join(KNOWN_REFERENCE_GENOMES)}"
    raise SpecError(f"{label} 'reference_genome': unknown reference genome '{name}'; {fix}")


def memory_mb(value: str) -> int:
    """'16g' -> 16384, '1500m' -> 1500 (the schema allows only these forms)."""
    return int(value[:-1]) * MEMORY_UNITS_MB[value[-1].lower()]


def _resources(data: dict[str, Any], resolve: Any, label: str) -> NodeResources:
    profile = data["profile"]
    profile_dir = PROFILES_DIR / profile if profile in INSTALLED_PROFILES else resolve(profile)
    if not (profile_dir / "config.yaml").is_file():
        raise SpecError(
            f"{label} 'resources.profile': '{profile}' has no config.yaml at '{profile_dir}'; "
            f"use {' or '.join(INSTALLED_PROFILES)}, or the path of a Snakemake profile directory"
        )
    memory = data.get("memory")
    return NodeResources(
        cores=int(data["cores"]),
        memory_mb=memory_mb(memory) if memory else None,
        profile=profile,
        profile_dir=profile_dir,
    )


def node_from_dict(document: Any, base_dir: Path, label: str = "node config") -> NodeSettings:
    data = validate(document, "node", label)

    def resolve(value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()

    hail = data["hail"]
    genotypes = data["genotypes"]
    resources = data["resources"]
    ledger = data.get("privacy_ledger", {})
    work_dir = resolve(data.get("work_dir", "work"))
    return NodeSettings(
        node_id=data["node_id"],
        genotype_format=genotypes["format"],
        genotype_path=resolve(genotypes["path"]),
        phenotypes=resolve(data["phenotypes"]),
        reference_genome=check_reference_genome(data["reference_genome"], label),
        work_dir=work_dir,
        results_dir=resolve(data.get("results_dir", "results")),
        hail=HailOptions(
            master=resources.get("spark_master", hail["master"]),
            driver_memory=hail["driver_memory"],
            tmp_dir=resolve(hail["tmp_dir"]) if "tmp_dir" in hail else None,
            executor_memory=resources.get("spark_executor_memory"),
            executor_cores=resources.get("spark_executor_cores"),
        ),
        resources=_resources(resources, resolve, label),
        reference_fasta=resolve(data["reference_fasta"]) if "reference_fasta" in data else None,
        dbsnp_vcf=resolve(data["dbsnp_vcf"]) if "dbsnp_vcf" in data else None,
        phenotype_coding=_phenotype_coding(data["phenotype_coding"]),
        kinship_max=float(data["relatedness"]["kinship_max"]),
        reference_check=ReferenceCheck(
            max_mismatch_rate=float(data["reference_check"]["max_mismatch_rate"]),
            sample_variants=int(data["reference_check"]["sample_variants"]),
        ),
        disclosure=dict(data.get("disclosure", {})),
        federation=_federation(data["federation"], resolve, work_dir, label)
        if "federation" in data
        else None,
        config_dir=base_dir,
        privacy_ledger=resolve(ledger["path"]) if "path" in ledger else None,
        privacy_secret=resolve(ledger["secret_file"]) if "secret_file" in ledger else None,
        genotype_sample=resolve(genotypes["sample"]) if "sample" in genotypes else None,
        dosage_field=genotypes.get("dosage_field"),
    )


def _phenotype_coding(data: dict[str, Any]) -> PhenotypeCoding:
    return PhenotypeCoding(
        quantitative_missing=tuple(float(code) for code in data["quantitative_missing"]),
        sex_column=data["sex_column"],
        sex_coding={str(value): sex for value, sex in data["sex_coding"].items()},
    )


def _federation(data: dict[str, Any], resolve: Any, work_dir: Path, label: str) -> NodeFederation:
    approvals = data["approved_workflows"]
    review, reviewers = data["output_review"], data["reviewers"]
    required = {"none": 0, "one": 1, "two": 2}[review]
    if len(reviewers) < required:
        raise SpecError(
            f"{label} 'federation.output_review': '{review}' needs {required} pinned reviewers in "
            f"federation.reviewers, found {len(reviewers)}; add their .pub keys "
            "(`federation keys generate --name REVIEWER`)"
        )
    return NodeFederation(
        mailbox=dict(data["mailbox"]),
        signing_key=resolve(data["signing_key"]),
        trusted_coordinators={
            name: resolve(path) for name, path in data["trusted_coordinators"].items()
        },
        approved_workflows=frozenset(entry for entry in approvals if isinstance(entry, str)),
        workflow_envelopes=tuple(
            (entry["digest"], dict(entry["envelope"]))
            for entry in approvals
            if isinstance(entry, dict)
        ),
        unapproved_workflows=data["unapproved_workflows"],
        output_review=review,
        reviewers={name: resolve(path) for name, path in reviewers.items()},
        policy_interval_minutes=float(data["policy_interval_minutes"]),
        cancel_poll_seconds=float(data["cancel_poll_seconds"]),
        max_task_age_hours=float(data["max_task_age_hours"]),
        ledger=resolve(data["ledger"]) if "ledger" in data else work_dir / "node-ledger.sqlite",
        audit_log=resolve(data["audit_log"]) if "audit_log" in data else work_dir / "audit.jsonl",
        coordinator_encryption_keys={
            name: resolve(path)
            for name, path in data.get("coordinator_encryption_keys", {}).items()
        },
    )


def load_node(path: Path) -> NodeSettings:
    label = f"node config '{path}'"
    return node_from_dict(load_document(path, label), path.resolve().parent, label)


def with_input_paths(
    node: NodeSettings, genotypes: Path | None = None, phenotypes: Path | None = None
) -> NodeSettings:
    """The node's settings with its genotype/phenotype paths replaced by the given ones.

    A CWL engine stages input files where it likes (a job directory, a container mount, an
    object store): the workflow declares the data as File inputs and passes the staged paths
    here, so paths written in the node config never need to resolve inside a job.
    """
    # absolute(), not resolve(): a staged .bed may be a link into a content-addressed store
    # whose target has no .bim/.fam beside it; the staged names do.
    if genotypes is not None:
        node = replace(node, genotype_path=genotypes.absolute())
    if phenotypes is not None:
        node = replace(node, phenotypes=phenotypes.absolute())
    return node


@dataclass(frozen=True)
class NodeEndpoint:
    node_id: str
    public_key: Path
    mailbox: dict[str, Any]
    remote_run_once: tuple[str, ...] = ()


# A dashboard token is a bearer secret: shorter ones can be guessed over the network.
MIN_TOKEN_LENGTH = 24
TOKEN_FIX = 'make one with `python -c "import secrets; print(secrets.token_urlsafe(32))"`'


@dataclass(frozen=True)
class DashboardToken:
    name: str
    role: str  # read or admin
    token: str = field(repr=False)


@dataclass(frozen=True)
class DashboardSettings:
    """`federation serve`: where it listens, how often it reads the nodes, who may do what."""

    tokens: tuple[DashboardToken, ...]
    host: str = "127.0.0.1"
    port: int = 8650
    refresh_seconds: float = 5.0


def _dashboard_token(entry: dict[str, Any], index: int, resolve: Any, label: str) -> DashboardToken:
    where = f"{label} 'dashboard.tokens[{index}]'"
    if ("token" in entry) == ("token_file" in entry):
        raise SpecError(
            f"{where}: has {'both' if 'token' in entry else 'neither'} 'token' and 'token_file'; "
            "give exactly one"
        )
    if "token_file" in entry:
        path = resolve(entry["token_file"])
        if not path.is_file():
            raise SpecError(f"{where} 'token_file': '{path}' not found; {TOKEN_FIX} into it")
        token = path.read_text().strip()
    else:
        token = entry["token"]
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token:
        raise SpecError(
            f"{where}: the token of '{entry['name']}' has {len(token)} characters "
            f"(fewer than {MIN_TOKEN_LENGTH}, or spaces); {TOKEN_FIX}"
        )
    return DashboardToken(entry["name"], entry["role"], token)


def _dashboard(data: dict[str, Any], resolve: Any, label: str) -> DashboardSettings:
    tokens = tuple(
        _dashboard_token(entry, index, resolve, label) for index, entry in enumerate(data["tokens"])
    )
    for index, token in enumerate(tokens):
        for other in tokens[:index]:
            if token.token == other.token:
                raise SpecError(
                    f"{label} 'dashboard.tokens[{index}]': '{token.name}' has the same token as "
                    f"'{other.name}'; give each holder its own"
                )
            if token.name == other.name:
                raise SpecError(
                    f"{label} 'dashboard.tokens[{index}]' 'name': '{token.name}' is used twice; "
                    "name each holder once"
                )
    return DashboardSettings(
        tokens=tokens,
        host=data["host"],
        port=int(data["port"]),
        refresh_seconds=float(data["refresh_seconds"]),
    )


@dataclass(frozen=True)
class CoordinatorSettings:
    coordinator_id: str
    signing_key: Path
    state_dir: Path
    results_dir: Path
    task_lifetime_hours: float
    nodes: dict[str, NodeEndpoint]
    config_dir: Path
    crypt4gh_key: Path | None = None  # the secret key that opens results; collecting needs it
    dashboard: DashboardSettings | None = None  # None: `federation serve` refuses to start

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "coordinator.sqlite"

    @property
    def audit_log(self) -> Path:
        """The coordinator's hash-chained audit log (submissions, verified and refused results)."""
        return self.state_dir / "audit.jsonl"


def load_coordinator(path: Path) -> CoordinatorSettings:
    label = f"coordinator config '{path}'"
    data = validate(load_document(path, label), "coordinator", label)
    base_dir = path.resolve().parent

    def resolve(value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (base_dir / candidate).resolve()

    nodes = {
        node_id: NodeEndpoint(
            node_id,
            resolve(entry["public_key"]),
            dict(entry["mailbox"]),
            tuple(entry.get("remote_run_once", ())),
        )
        for node_id, entry in data["nodes"].items()
    }
    return CoordinatorSettings(
        coordinator_id=data["coordinator_id"],
        signing_key=resolve(data["signing_key"]),
        state_dir=resolve(data["state_dir"]),
        results_dir=resolve(data["results_dir"]),
        task_lifetime_hours=float(data["task_lifetime_hours"]),
        nodes=nodes,
        config_dir=base_dir,
        crypt4gh_key=resolve(data["crypt4gh_key"]) if "crypt4gh_key" in data else None,
        dashboard=_dashboard(data["dashboard"], resolve, label) if "dashboard" in data else None,
    )
