"""`churnops keys create / list / revoke`: API keys of the Istio external authorizer.

`keys create` prints the new key once, alone on stdout (so `KEY=$(churnops keys create ...)` works), and
records only its hash in the keys Secret manifest; everything else goes to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churn_authorizer.scopes import Scope

app = typer.Typer(name="keys", help="API keys for the Istio external authorizer.", no_args_is_help=True)

SecretFile = Annotated[
    Path | None,
    typer.Option(
        "--secret-file",
        help="Keys Secret manifest [default: CHURNOPS_AUTHORIZER_SECRET_MANIFEST, "
        "else kustomize/base/secrets/api-keys.yaml]",
    ),
]


def _secret_path(secret_file: Path | None) -> Path:
    from churn_authorizer.settings import get_settings

    return secret_file if secret_file is not None else get_settings().secret_manifest


@app.command("create")
def create(
    scope: Annotated[list[Scope], typer.Option("--scope", "-s", help="Repeat for several scopes.")],
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key.")] = "",
    rate_limit: Annotated[
        int | None,
        typer.Option("--rate-limit", min=1, help="Requests per period for this key [default: global]."),
    ] = None,
    secret_file: SecretFile = None,
    print_only: Annotated[
        bool,
        typer.Option("--print-only", help="Print the keys.json entry on stderr; write no file."),
    ] = False,
) -> None:
    """Create a key: print it once on stdout and store only its hash."""
    import orjson

    from churn_authorizer.keys import generate_key
    from churn_authorizer.manifest import read_secret_manifest, write_secret_manifest

    if print_only:
        new = generate_key(scope, name=name, rate_limit=rate_limit)
        entry = new.entry.model_dump(mode="json", exclude_none=True)
        rendered = orjson.dumps(entry, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        typer.echo(f"keys.json entry for key id {new.entry.id} (add it to 'keys'):\n{rendered}", err=True)
        typer.echo(new.key)
        return
    path = _secret_path(secret_file)
    manifest, document = read_secret_manifest(path)
    taken = frozenset(key.id for key in document.keys)
    new = generate_key(scope, name=name, rate_limit=rate_limit, taken_ids=taken)
    document.keys.append(new.entry)
    write_secret_manifest(path, manifest, document)
    typer.echo(
        f"key id {new.entry.id} ({', '.join(new.entry.scopes)}) recorded in {path}; the key is shown once, "
        "below. Apply the Secret for it to take effect.",
        err=True,
    )
    typer.echo(new.key)


@app.command("list")
def list_keys(
    secret_file: SecretFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """Key ids, names, scopes and limits (never hashes)."""
    import orjson

    from churn_authorizer.manifest import read_secret_manifest

    _, document = read_secret_manifest(_secret_path(secret_file))
    rows = [key.model_dump(mode="json", exclude={"hash"}) for key in document.keys]
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row).decode())
        return
    header = ("ID", "NAME", "SCOPES", "RATE_LIMIT", "CREATED")
    table = [header] + [
        (
            row["id"],
            row["name"] or "-",
            ",".join(row["scopes"]),
            str(row["rate_limit"]) if row["rate_limit"] else "default",
            row["created"] or "-",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (the part after co_ in co_<id>_<secret>).")],
    secret_file: SecretFile = None,
) -> None:
    """Remove a key from the Secret manifest (effective once the Secret is applied and mounted)."""
    from churn_authorizer.manifest import read_secret_manifest, write_secret_manifest

    path = _secret_path(secret_file)
    manifest, document = read_secret_manifest(path)
    remaining = [key for key in document.keys if key.id != key_id]
    if len(remaining) == len(document.keys):
        typer.echo(f"no key with id {key_id!r} in {path}", err=True)
        raise typer.Exit(1)
    document.keys[:] = remaining
    write_secret_manifest(path, manifest, document)
    typer.echo(f"key id {key_id} revoked in {path}; apply the Secret for it to take effect.", err=True)
