"""`python -m churn_authorizer serve`: the container entrypoint, without the rest of the `churnops` CLI."""

from churn_authorizer.cli import authorizer_app

authorizer_app(prog_name="churn_authorizer")
