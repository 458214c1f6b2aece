"""Print one optional-dependency group of pyproject.toml as a requirements file.

For environments that need an extra's pinned libraries but not ChurnOps itself: the predictor (the stock
MLServer sklearn runtime serves our model with scikit-learn alone, and the tests prove it there).

    python scripts/extra_requirements.py predictor > requirements.txt
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def main() -> None:
    extra = sys.argv[1]
    pyproject = (
        Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[1] / "pyproject.toml"
    )
    with pyproject.open("rb") as handle:
        requirements = tomllib.load(handle)["project"]["optional-dependencies"][extra]
    sys.stdout.write("\n".join(requirements) + "\n")


if __name__ == "__main__":
    main()
