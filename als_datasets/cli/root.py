"""The typer application every command module adds its command to (kept apart from
:mod:`als_datasets.cli` so that the command modules never import the package that imports them)."""

from __future__ import annotations

import typer

from als_datasets import __version__

app = typer.Typer(
    name="als-datasets",
    help="Build pre-training datasets for geospatial foundation models and publish them to the Hub.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"als-datasets {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    debug: bool = typer.Option(False, "--debug", help="On an error, show the full traceback instead of the one-line "
                                                     "message (also accepted after the command)."),
) -> None:
    """als-datasets."""
