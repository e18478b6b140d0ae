"""``als-datasets push``: publish a build folder to the Hugging Face Hub in one atomic commit."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer

from als_datasets.cli.options import DEBUG
from als_datasets.cli.root import app


@app.command()
def push(
    out: Path = typer.Argument(..., help="A finished build folder."),
    repo_id: str = typer.Argument(..., help="The dataset repo, ORG/NAME."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    token: str = typer.Option(None, "--token", help="Hub token; '-' reads it from standard input. Default: HF_TOKEN "
                                                     "or the huggingface_hub login (preferred: nothing on the command line)."),
    force: bool = typer.Option(False, "--force", help="Replace a repo that holds something else."),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="Leave out (and list) files in the folder that "
                                                                    "the build did not write, instead of refusing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    debug: bool = DEBUG,
) -> None:
    """Validate, upload the shards, then flip `main` to the new version in one commit. Publishes
    what the manifest and the layout name (card, recipe, manifest, _info.json, index, frame,
    Croissant, report, shards), with the card's loading examples naming ORG/NAME; a file the build
    did not write is refused (--skip-unknown: left out). Re-running resumes an interrupted upload;
    re-running after success changes nothing."""
    from als_datasets.progress import Reporter
    from als_datasets.publish.push import push as do_push

    if token == "-":
        token = sys.stdin.readline().strip()
    with Reporter(enabled=not quiet) as rep, contextlib.ExitStack() as stack:
        state: dict = {}

        def progress(what: str, done: int, total: int) -> None:
            if "advance" not in state:
                state["advance"], state["done"] = stack.enter_context(rep.step(f"{what} files", total)), 0
            state["advance"](done - state["done"])
            state["done"] = done

        res = do_push(out, repo_id, token=token, private=private, force=force, progress=progress,
                      skip_unknown=skip_unknown)
    if res.skipped:
        typer.echo(f"left out {len(res.skipped)} file(s) the build did not write: {', '.join(res.skipped)}", err=True)
    if res.noop:
        typer.echo(f"{repo_id}: already up to date ({res.unchanged} files unchanged); nothing uploaded")
    else:
        typer.echo(f"{repo_id}: {res.uploaded} file(s) uploaded, {res.deleted} removed, {res.unchanged} unchanged; "
                   f"main is now at {res.commit[:12]}")
