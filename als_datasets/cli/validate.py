"""``als-datasets validate``: check every shard of a build against its manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from als_datasets.cli.options import DEBUG
from als_datasets.cli.root import app


@app.command()
def validate(out: Path = typer.Argument(..., help="A build's output folder."), debug: bool = DEBUG) -> None:
    """Verify presence, size and sha256 of every shard listed in manifest.json, the split counts
    and the files the build did not write. Exit 0: valid; 1: problems found (one line each);
    2: not a build folder."""
    from als_datasets.dataset.layout import validate as check

    problems = check(out)
    for p in problems:
        typer.echo(f"{out}/{p}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{out}: valid")
