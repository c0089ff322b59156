"""The one engine switch: run a study's node pipeline with the engine the study names.

`engine: snakemake` (the default) runs `Snakefile` and `rules/`; `engine: cwl` runs
`workflows/node_pipeline.cwl` with cwltool. Both run the same `federation step` commands and
publish the same files (tests/integration/test_cwl_parity.py). The node agent passes the
folder of a verified bundle as `pipeline_root`; an admin running a study by hand gets the
installed pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from federation.files import REPO_ROOT
from federation.pipeline.cwl import BUNDLED_WORKFLOW, run_cwl_pipeline
from federation.pipeline.runs import PipelineRun, RunControl
from federation.pipeline.snakemake import run_node_pipeline
from federation.spec import StudySpec, load_study

ENGINES = ("snakemake", "cwl")
SNAKEFILE_NAME = "Snakefile"


def run_pipeline(
    node_config: Path,
    study_config: Path,
    *,
    study: StudySpec | None = None,
    pipeline_root: Path = REPO_ROOT,
    cores: int | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
    control: RunControl | None = None,
) -> PipelineRun:
    """Run the node pipeline of `study_config` (already loaded as `study`, if at hand).

    The node's `resources` (node.yaml) size the run; `cores` overrides its cores. `resume`: a
    run of this study was interrupted (Snakemake's lock is cleared first). `control` says where
    the release goes and when to stop (`runs.RunControl`).
    """
    engine = (study or load_study(study_config)).engine
    if engine == "cwl":
        workflow = pipeline_root / BUNDLED_WORKFLOW
        return run_cwl_pipeline(
            node_config, study_config, workflow=workflow, progress=progress, control=control
        )
    return run_node_pipeline(
        node_config,
        study_config,
        snakefile=pipeline_root / SNAKEFILE_NAME,
        cores=cores,
        unlock_first=resume,
        progress=progress,
        control=control,
    )
