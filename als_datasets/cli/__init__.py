"""The ``als-datasets`` command line (typer): one module per subcommand, heavy imports inside
the commands, bad input reported as one line naming the file and the reason (``--debug`` shows
the traceback)."""

from __future__ import annotations

import sys

import typer

from als_datasets.cli.root import app


def _register() -> None:
    # each module adds its command to ``app``
    from als_datasets.cli import build, plan, pretrain, probe, projects, push, report, validate  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Console entry point: turns :class:`InputError` into ``error: <file>: <reason>``, exit 2."""
    from als_datasets.errors import InputError

    _register()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        code = app(args=args, standalone_mode=False)  # non-standalone typer returns exit codes, never raises Exit
    except InputError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # disk full, permissions...: name the file, keep it one line
        if debug:
            raise
        typer.echo(f"error: {exc.filename or ''}: {exc.strerror or exc}".replace("error: : ", "error: "), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: re-run the same command to resume", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        typer.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        sys.exit(1)
    if code == 130:  # Ctrl-C: typer turns KeyboardInterrupt into a returned 130
        typer.echo("interrupted: re-run the same command to resume", err=True)
    if isinstance(code, int) and code:
        sys.exit(code)


_register()
