"""Write a large customer file for the batch-scoring benchmark: Telco rows resampled with fresh ids.

The output lives outside git (default .churnops/bench/, ignored); it is a derived copy of the data set and
must never be committed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/telco-customer-churn.csv"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=Path(".churnops/bench/customers-1m.csv"))
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    table = pacsv.read_csv(
        args.data, convert_options=pacsv.ConvertOptions(column_types={"TotalCharges": pa.string()})
    ).drop_columns(["Churn"])
    rows = np.random.default_rng(args.seed).integers(0, table.num_rows, size=args.rows)
    sampled = table.take(pa.array(rows))
    ids = pa.array([f"C{i:08d}" for i in range(args.rows)])
    sampled = sampled.set_column(0, "customerID", ids)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(sampled, args.output, pacsv.WriteOptions(quoting_style="none"))
    print(f"wrote {args.rows:,} rows to {args.output}")


if __name__ == "__main__":
    main()
