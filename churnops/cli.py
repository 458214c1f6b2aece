"""`churnops`: one command line for every job, from training to the cluster.

Every module in `churnops.commands` holds one typer app: a group (`typer.Typer(name="monitor")`) or
top-level commands (`typer.Typer()`); this module mounts each the same way, with `add_typer`. Command
modules import nothing heavy at module level, so `churnops --help` stays instant.
"""

from __future__ import annotations

import typer

from churnops.commands import (
    authorizer,
    cluster,
    data,
    evaluate,
    feedback,
    keys,
    model,
    monitor,
    rollout,
    serving,
)

COMMAND_MODULES = (data, model, serving, monitor, feedback, keys, authorizer, cluster, evaluate, rollout)

app = typer.Typer(
    name="churnops",
    help="Customer-churn prediction: train, register, serve on KServe, monitor, roll out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
for module in COMMAND_MODULES:
    app.add_typer(module.app)


def main() -> None:
    app()
