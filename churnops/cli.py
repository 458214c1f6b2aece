"""`churnops`: one command line for every job, from training to the cluster.

Each component owns its commands (`churn_model.cli`, `churn_transformer.cli`, ...); this module only mounts
them. Command modules import nothing heavy at module level, so `churnops --help` stays instant and an
image that lacks an extra can still run the commands of the extras it has.
"""

from __future__ import annotations

import typer

from churn_authorizer.cli import authorizer_app, keys_app
from churn_model.cli import data_app, register_model_commands
from churn_monitoring.cli import monitor_app, register_monitoring_commands
from churn_transformer.cli import register_serving_commands
from churnops.cluster.cli import register_cluster_commands

app = typer.Typer(
    name="churnops",
    help="Customer-churn prediction: train, register, serve on KServe, monitor, roll out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data_app, name="data")
app.add_typer(monitor_app, name="monitor")
app.add_typer(keys_app, name="keys")
app.add_typer(authorizer_app, name="authorizer")
register_model_commands(app)
register_serving_commands(app)
register_monitoring_commands(app)
register_cluster_commands(app)


def main() -> None:
    app()
