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


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The command-line parser's own errors (typer >= 0.20 vendors click as ``typer._click``)."""
    import click

    found: list[type[BaseException]] = [click.exceptions.ClickException]
    try:
        from typer._click.exceptions import ClickException as TyperClickException  # noqa: PLC0415
    except ImportError:
        pass
    else:
        found.append(TyperClickException)
    return tuple(found)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Bad input (an :class:`InputError`, a file that cannot be read, an
    invalid option or command) prints ``error: <file or option>: <reason>`` on one line and exits
    2; an unexpected failure prints its message (never a bare exception class) and exits 1;
    ``--debug`` (anywhere on the line) shows the traceback instead."""
    from als_datasets.errors import InputError

    _register()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    while "--debug" in args:
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
        typer.echo(_one_line(f"error: {exc.filename or ''}: {exc.strerror or exc}".replace("error: : ", "error: ")),
                   err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: re-run the same command to resume", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except _usage_errors() as exc:  # unknown command, invalid or missing option: name what was typed
        if debug:
            raise
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        typer.echo(_one_line(f"error: {exc.format_message()}{where}"), err=True)
        sys.exit(2 if getattr(exc, "exit_code", 1) in (None, 1, 2) else exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        typer.echo(_one_line(f"error: unexpected failure: {exc or 'no message'} "
                             "(run again with --debug for the traceback, and please report it)"), err=True)
        sys.exit(1)
    if code == 130:  # Ctrl-C: typer turns KeyboardInterrupt into a returned 130
        typer.echo("interrupted: re-run the same command to resume", err=True)
    if isinstance(code, int) and code:
        sys.exit(code)


_register()
