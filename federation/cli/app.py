"""The root `federation` command and its groups; the command modules add themselves to these."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="federation",
    help="Federated analysis orchestrator for cross-border genomics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
step_app = typer.Typer(
    help="Node pipeline steps (called by the Snakemake rules and CWL tools; not for everyday use).",
    no_args_is_help=True,
)
app.add_typer(step_app, name="step")
node_app = typer.Typer(help="Commands a national node's admin runs.", no_args_is_help=True)
app.add_typer(node_app, name="node")
review_app = typer.Typer(
    help="Output review: gated results wait here until the node's reviewers approve them.",
    no_args_is_help=True,
)
node_app.add_typer(review_app, name="review")
study_app = typer.Typer(help="Commands a coordinator runs for a study.", no_args_is_help=True)
app.add_typer(study_app, name="study")
keys_app = typer.Typer(
    help="Keys: ed25519 for signing, Crypt4GH for sealing results.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(
    help="Hash-chained audit logs (node and coordinator).", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")
