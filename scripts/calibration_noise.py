"""How large a calibration error does sampling noise alone produce on a test set of a given size?

Draws outcomes from the model's own test-split probabilities (a perfectly calibrated world) and measures
the same ECE the training report uses. Compare the model's measured ECE with this floor.

    .venv/bin/python scripts/calibration_noise.py [--artefact .churnops/models/1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from churn_model.evaluation import expected_calibration_error


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artefact", type=Path, default=Path(".churnops/models/1"))
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args()
    probabilities = np.array(
        json.loads((args.artefact / "test-predictions.json").read_text())["probabilities"], dtype=np.float64
    )
    rng = np.random.default_rng(0)
    for size in (len(probabilities), 5 * len(probabilities)):
        sample = (
            rng.choice(probabilities, size=size, replace=True)
            if size != len(probabilities)
            else probabilities
        )
        errors = [expected_calibration_error(rng.random(size) < sample, sample) for _ in range(args.draws)]
        print(
            f"{size:6d} customers: ECE of a perfectly calibrated model mean {np.mean(errors):.4f}, "
            f"90th percentile {np.quantile(errors, 0.9):.4f}"
        )


if __name__ == "__main__":
    main()
