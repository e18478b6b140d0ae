"""``als-datasets projects INDEX``: list what an archive index holds (name, points, area, year)."""

from __future__ import annotations

import typer

from als_datasets.cli.root import app


@app.command()
def projects(
    index: str = typer.Argument(..., help="An archive index: a resources GeoJSON file or URL "
                                          "(3DEP: https://raw.githubusercontent.com/hobuinc/usgs-lidar/"
                                          "master/boundaries/resources.geojson)."),
    bbox: str = typer.Option(None, "--bbox", help="Only projects intersecting WEST,SOUTH,EAST,NORTH (degrees)."),
    name: list[str] = typer.Option(None, "--name", help="Only these projects (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """List the projects of an archive index: name, points, area km², year (when the name has one)."""
    import json

    from als_datasets.archives import format_table, read_index, select
    from als_datasets.errors import InputError

    box = None
    if bbox:
        try:
            box = [float(v) for v in bbox.replace(" ", "").split(",")]
        except ValueError:
            raise InputError(None, f"--bbox must be WEST,SOUTH,EAST,NORTH in degrees, got {bbox!r}") from None
    entries = select(read_index(index), list(name) if name else "all", box, where=index)
    if as_json:
        for e in entries:
            typer.echo(json.dumps(e.to_json()))
    else:
        typer.echo(format_table(entries))
