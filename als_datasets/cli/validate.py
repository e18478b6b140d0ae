"""``als-datasets validate``: check every shard of a build against its manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from als_datasets.cli.root import app


@app.command()
def validate(out: Path = typer.Argument(..., help="A build's output folder.")) -> None:
    """Verify presence, size and sha256 of every shard listed in manifest.json."""
    from als_datasets.dataset.layout import validate as check

    problems = check(out)
    for p in problems:
        typer.echo(f"{out}/{p}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{out}: valid")
