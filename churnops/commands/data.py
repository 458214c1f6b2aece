"""`churnops data download / validate`: the Telco Customer Churn data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churnops.commands.common import DataOption, console, fail

app = typer.Typer(name="data", help="The Telco Customer Churn data set.", no_args_is_help=True)


@app.command("download")
def data_download(
    to: Annotated[Path, typer.Option(help="Where to write the CSV")] = Path("data/telco-customer-churn.csv"),
) -> None:
    """Fetch the data set from its public source (IBM, Apache-2.0) and check its sha256."""
    from churn_model.download import ChecksumMismatchError, download_dataset
    from churn_model.settings import get_settings

    settings = get_settings()
    try:
        path = download_dataset(settings.data_url, settings.data_sha256, to)
    except ChecksumMismatchError as error:
        raise fail(str(error)) from error
    console.print(f"wrote {path} (sha256 verified)")


@app.command("validate")
def data_validate(data: DataOption = None) -> None:
    """Check a Telco CSV against the feature contract; exit 1 naming column, line and value if not."""
    from churn_core.contract import telco_contract
    from churn_core.data import (
        CustomerReader,
        DataNotFoundError,
        DataValidationError,
        resolve_data_path,
    )
    from churn_model.settings import get_settings

    try:
        path = resolve_data_path(data, get_settings())
        customers = CustomerReader(telco_contract(), require_target=True).read_all(path)
    except (DataValidationError, DataNotFoundError) as error:
        raise fail(str(error)) from error
    assert customers.churned is not None
    console.print(
        f"{path}: {len(customers.batch)} customers, {int(customers.churned.sum())} churners — valid"
    )
