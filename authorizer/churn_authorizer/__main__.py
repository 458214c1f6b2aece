"""`python -m churn_authorizer serve|healthcheck`: the container entrypoint, without the `churnops` CLI."""

import sys

from churn_authorizer.main import main

if __name__ == "__main__":
    sys.exit(main())
