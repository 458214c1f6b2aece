"""`python -m churn_transformer`: the transformer image's entry point."""

from __future__ import annotations

import sys

from churn_transformer.main import main

if __name__ == "__main__":
    sys.exit(main())
