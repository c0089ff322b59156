"""`federation node ...`: what a national node's admin (and its output reviewers) run.

`run-once` and `watch` hold the node's lock (a second one exits 75 at once); `run-once` exits
with what became of its tasks (`federation.cli`: 1 failed, 3 refused or withheld, 4 held or in
review). `tasks`, `approve` and `reject` are the national veto; `review` the output check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from federation.cli.app import node_app, review_app
from federation.cli.common import (
    NodeAgentConfigOption,
    NodeConfigOption,
    StudyConfigOption,
    echo_err,
    outcome_exit_code,
    stopped_by_signals,
)

if TYPE_CHECKING:
    from federation.node.agent import NodeAgent, TaskOutcome

TaskArgument = Annotated[str, typer.Argument(help="The task's id (see `federation node tasks`).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ByOption = Annotated[
    str | None, typer.Option("--by", help="Who decides (default: your account name).")
]


def _agent(config: Path) -> NodeAgent:
    from federation.node.agent import NodeAgent

    return NodeAgent(config, progress=echo_err)


@node_app.command("run-pipeline")
def run_pipeline(
    node_config: NodeConfigOption,
    study_config: StudyConfigOption,
    cores: Annotated[
        int | None, typer.Option(help="CPU cores (default: the node's resources.cores).")
    ] = None,
) -> None:
    """Run the node pipeline for one study on this node and publish what passes the gate.

    The study's `engine` picks the runner: Snakemake, or cwltool for `engine: cwl`. Exits 3
    when the gate withheld an analysis (the others are published; the audit log says why).
    """
    from federation.outcomes import ReleaseOutcome
    from federation.pipeline.run import run_pipeline as run_study_pipeline
    from federation.settings import load_node

    with stopped_by_signals():
        run = run_study_pipeline(node_config, study_config, cores=cores, progress=echo_err)
    for path in run.released_files:
        typer.echo(str(path))
    withheld = run.analyses(ReleaseOutcome.WITHHELD)
    if withheld:
        node = load_node(node_config)
        log = node.federation.audit_log if node.federation else node.work_dir / "audit.jsonl"
        for analysis in withheld:
            category = run.outcomes[analysis].category
            remedy = f" ({category}: {category.remedy})" if category else ""
            echo_err(
                f"analysis '{analysis}': withheld by the disclosure gate{remedy}; {log} says why"
            )
        raise typer.Exit(outcome_exit_code([], withheld_analyses=True))


def _print_outcomes(outcomes: list[TaskOutcome]) -> None:
    for outcome in outcomes:
        analyses = ", ".join(
            f"{name} {value.describe()}" for name, value in outcome.analyses.items()
        )
        typer.echo(f"{outcome.task_id}\t{outcome.status.value}\t{outcome.reason or analyses}")


@node_app.command("run-once")
def node_run_once(config: NodeAgentConfigOption) -> None:
    """Check the mailbox once: take up open tasks, then verify, admit and run new ones.

    Exits 0 when all went well, 1 if a task failed, 3 if one was refused or withheld,
    4 if one waits for the admin or the output reviewers, 75 if another agent is at work.
    """
    from federation.outcomes import ReleaseOutcome
    from federation.protocol.messages import TaskStatus

    agent = _agent(config)
    with stopped_by_signals():
        outcomes = agent.run_once()
    _print_outcomes(outcomes)
    withheld = any(
        decided.outcome is ReleaseOutcome.WITHHELD
        for outcome in outcomes
        for decided in outcome.analyses.values()
        if outcome.status is TaskStatus.RELEASED
    )
    code = outcome_exit_code(
        [outcome.status for outcome in outcomes],
        withheld_analyses=withheld,
        refused=frozenset({TaskStatus.REJECTED, TaskStatus.VETOED, TaskStatus.WITHHELD}),
    )
    raise typer.Exit(code)


@node_app.command("watch")
def node_watch(
    config: NodeAgentConfigOption,
    interval: Annotated[float, typer.Option(help="Seconds between inbox checks.")] = 30.0,
    cycles: Annotated[
        int | None, typer.Option(help="Stop after this many checks (default: never).")
    ] = None,
) -> None:
    """Poll the mailbox (outbound connections only) and handle tasks as they arrive.

    SIGTERM stops the running pipeline's processes; the task resumes on the next start.
    """
    agent = _agent(config)
    with stopped_by_signals():
        agent.watch(interval, cycles)


@node_app.command("tasks")
def node_tasks(
    config: NodeAgentConfigOption,
    task: Annotated[
        str | None, typer.Argument(help="Show this task in full, with the pipeline's diff.")
    ] = None,
    all_tasks: Annotated[
        bool, typer.Option("--all", help="Also the finished tasks (released, refused, ...).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List pending, held, approved, running and in-review tasks; detail for held ones."""
    from federation.node.tasks import describe, format_table, task_views, workflow_diff

    agent = _agent(config)
    views = task_views(agent, include_finished=all_tasks or task is not None)
    if task is not None:
        views = [view for view in views if view.task_id == task]
        if not views:
            from federation.errors import SpecError

            raise SpecError(f"task '{task}': unknown to node '{agent.node.node_id}'; check the id")
    if as_json:
        documents = []
        for view in views:
            diff = workflow_diff(agent, view.task_id)
            documents.append(
                {
                    "task_id": view.task_id,
                    "state": view.state,
                    "study_id": view.study_id,
                    "sequence": view.sequence,
                    "coordinator": view.coordinator,
                    "key_id": view.key_id,
                    "since": view.updated_at,
                    "workflow_digest": view.workflow_digest,
                    "detail": view.detail,
                    "analyses": {key: value.as_dict() for key, value in view.analyses.items()},
                    "study": view.study.raw if view.study else None,
                    "diff": {
                        "base": diff.base,
                        "added": list(diff.added),
                        "removed": list(diff.removed),
                        "changed": diff.changed,
                    },
                }
            )
        typer.echo(json.dumps(documents, indent=2))
        return
    if task is not None:
        typer.echo(describe(views[0], workflow_diff(agent, task), full_diff=True))
        return
    typer.echo(format_table(views))
    for view in views:
        if view.state == "held":
            typer.echo("")
            typer.echo(describe(view, workflow_diff(agent, view.task_id), full_diff=False))


@node_app.command("approve")
def node_approve(
    config: NodeAgentConfigOption,
    task: TaskArgument,
    by: ByOption = None,
    remember: Annotated[
        bool,
        typer.Option(
            "--remember",
            help="Also approve the workflow for later studies inside an envelope (default: "
            "this study's kinds, traits, covariates and thresholds).",
        ),
    ] = False,
    envelope: Annotated[
        Path | None,
        typer.Option("--envelope", help="YAML parameter envelope to approve with --remember."),
    ] = None,
) -> None:
    """Let a held task run (the agent runs it on its next pass). Audited."""
    from federation.schema import load_document

    document = load_document(envelope, f"envelope '{envelope}'") if envelope else None
    agent = _agent(config)
    agent.approve(task, by=by, remember=remember or envelope is not None, envelope=document)
    typer.echo(f"{task}\tapproved\tthe agent runs it on its next pass")


@node_app.command("reject")
def node_reject(
    config: NodeAgentConfigOption,
    task: TaskArgument,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (kept in the node's audit log; never sent).")
    ],
    by: ByOption = None,
) -> None:
    """Veto a held task. The coordinator is told `vetoed`, never the reason. Audited."""
    outcome = _agent(config).veto(task, reason, by=by)
    typer.echo(f"{task}\t{outcome.status.value}\tthe coordinator is told: {outcome.reason}")


@node_app.command("publish-policy")
def node_publish_policy(
    config: NodeAgentConfigOption,
    as_json: JsonOption = False,
) -> None:
    """Publish the node's signed policy now (the agent also does, whenever it changes)."""
    document = _agent(config).publish_policy(force=True)
    payload = document.to_payload()
    typer.echo(
        json.dumps(payload, indent=2) if as_json else yaml.safe_dump(payload, sort_keys=False)
    )


# ---------------------------------------------------------------- output review


@review_app.command("list")
def review_list(config: NodeAgentConfigOption) -> None:
    """Tasks whose gated results wait for review, with the approvals they have."""
    from federation.protocol.messages import TaskStatus

    agent = _agent(config)
    waiting = agent.ledger.tasks((TaskStatus.IN_REVIEW,))
    if not waiting:
        typer.echo("nothing waits for review")
        return
    for task in waiting:
        state = agent.review_state(task.task_id)
        approvals = ", ".join(state.approvals) or "none"
        typer.echo(
            f"{task.task_id}\t{task.study_id}\tsince {task.updated_at}\t"
            f"{len(state.approvals)} of {state.mode.required_approvals} approvals ({approvals})"
        )


@review_app.command("show")
def review_show(
    config: NodeAgentConfigOption, task: TaskArgument, as_json: JsonOption = False
) -> None:
    """The machine-prefilled summary of a release waiting for review."""
    from federation.node.review import format_summary, read_summary

    agent = _agent(config)
    summary = read_summary(agent.node.work_dir, task)
    state = agent.review_state(task)
    if as_json:
        typer.echo(json.dumps({**summary, "approvals": list(state.approvals)}, indent=2))
        return
    typer.echo(format_summary(summary))
    typer.echo(
        f"approvals: {len(state.approvals)} of {state.mode.required_approvals} "
        f"({', '.join(state.approvals) or 'none'})"
    )


KeyOption = Annotated[
    Path,
    typer.Option("--key", help="Your own ed25519 private key (pinned in federation.reviewers)."),
]


def _review(config: Path, task: str, key: Path, approve: bool, reason: str | None) -> None:
    from federation.node.review import Verdict
    from federation.protocol.signing import load_private_key

    agent = _agent(config)
    verdict = Verdict.APPROVE if approve else Verdict.REJECT
    state = agent.review(task, load_private_key(key), verdict, reason)
    if state.rejections:
        typer.echo(f"{task}\trejected\tnothing is published; the coordinator is told: withheld")
        return
    needed = state.mode.required_approvals
    typer.echo(
        f"{task}\t{len(state.approvals)} of {needed} approvals\t"
        + (
            "the agent publishes it on its next pass"
            if state.approved
            else f"waits for {needed - len(state.approvals)} more distinct reviewer(s)"
        )
    )


@review_app.command("approve")
def review_approve(
    config: NodeAgentConfigOption,
    task: TaskArgument,
    key: KeyOption,
    note: Annotated[str | None, typer.Option("--note", help="A note for the audit log.")] = None,
) -> None:
    """Approve the release under review, signed with your key (once per reviewer)."""
    _review(config, task, key, True, note)


@review_app.command("reject")
def review_reject(
    config: NodeAgentConfigOption,
    task: TaskArgument,
    key: KeyOption,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (kept in the node's audit log; never sent).")
    ],
) -> None:
    """Reject the release under review: nothing of it leaves the node."""
    _review(config, task, key, False, reason)


@node_app.command("selftest")
def node_selftest(
    config: Annotated[
        Path | None, typer.Option("--config", help="The node config whose policy is tested.")
    ] = None,
    case: Annotated[
        list[str] | None, typer.Option("--case", help="Run only this case (repeatable).")
    ] = None,
) -> None:
    """Feed the installed disclosure gate disclosive outputs and attack bundles; exit 1 on a FAIL."""
    from federation.node.selftest import format_results, run_selftest
    from federation.settings import load_node

    results = run_selftest(load_node(config) if config else None, only=set(case) if case else None)
    typer.echo(format_results(results))
    if not all(result.passed for result in results):
        raise typer.Exit(1)


# The privacy ledger's own commands (`federation node privacy-ledger ...`).
privacy_ledger_app = typer.Typer(help="The node's privacy ledger.", no_args_is_help=True)
node_app.add_typer(privacy_ledger_app, name="privacy-ledger")


@privacy_ledger_app.command("reinit")
def privacy_ledger_reinit(
    config: Annotated[Path, typer.Option("--config", help="The node config (node.yaml).")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why the release history is restarted (audited).")
    ],
) -> None:
    """Start a new privacy-ledger history after the old one was lost (the old file is kept
    aside, the event and its reason go to the node's audit log). Until then no release runs."""
    from federation.release.gate import audit_log_of, ledger_paths
    from federation.release.ledger import PrivacyLedger
    from federation.settings import load_node

    node = load_node(config)
    path, secret = ledger_paths(node)
    PrivacyLedger.reinitialise(path, secret, audit_log_of(node), reason, node.node_id)
    typer.echo(f"privacy ledger '{path}': new history started; recorded in the node audit log")
