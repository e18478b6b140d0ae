"""Which folders a build may write into, and which files of a build folder are the build's.

A build (or ``plan``) writes only into

* a missing or empty folder (a fresh build);
* its own earlier build of the same recipe: an interrupted one (``OUT/.build/``, whose
  ``recipe.yaml`` records the recipe it was started with) is resumed, a finished one
  (``manifest.json`` + ``recipe.yaml``) is checked and repaired;
* with ``overwrite``, an earlier build of a *different* recipe (another strategy, seed, size...),
  which it replaces.

Anything else is refused before any work with one line naming the folder and what is in the
way; a folder that is not a build is never written into, ``overwrite`` or not.  Recipes are
compared as resolved (``recipe.yaml``'s content), less ``output.dir``: where, not what.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from als_datasets.errors import InputError

WORK_DIR = ".build"
#: the recipe an unfinished build was started with (inside WORK_DIR)
STARTED_RECIPE = "recipe.yaml"
#: the files a build writes besides its shards (DESIGN.md §4): metadata, then report and card
BUILD_FILES = frozenset({
    "README.md", "recipe.yaml", "manifest.json", "_info.json", "index.parquet", "frame.parquet", "croissant.json",
    "report/diversity.json", "report/footprints.png", "report/labels.png", "report/entropy.png",
})
SHARD_FOLDERS = ("webdataset", "parquet")


def _what(recipe) -> dict:
    """The resolved recipe as ``recipe.yaml`` records it, without the output folder."""
    from als_datasets.recipe import dump_recipe

    return _strip(yaml.safe_load(dump_recipe(recipe)))


def _strip(doc) -> dict | None:
    if not isinstance(doc, dict):
        return None
    doc = dict(doc)
    if isinstance(doc.get("output"), dict):
        doc["output"] = {k: v for k, v in doc["output"].items() if k != "dir"}
    return doc


def _read_recipe(path: Path) -> dict | None:
    try:
        return _strip(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None


def _is_finished_build(out: Path) -> bool:
    try:
        m = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(m, dict) and m.get("tool") == "als-datasets" and (out / "recipe.yaml").is_file()


def _only_build_entries(out: Path) -> bool:
    """Whether every entry of the folder is one a build writes (metadata, shard and report
    folders, ``.build``, temp files of atomic writes)."""
    names = {f.split("/")[0] for f in BUILD_FILES} | set(SHARD_FOLDERS) | {WORK_DIR}
    return all(p.name in names or (p.name.startswith(".") and ".tmp-" in p.name) for p in out.iterdir())


def _listing(out: Path, limit: int = 4) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _differences(old: dict, new: dict, limit: int = 3) -> str:
    """``seed 41 → 7, strategy geospatial → random``: the keys whose values differ."""
    def flat(d: dict) -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            else:
                out[k] = v
        return out

    a, b = flat(old), flat(new)
    keys = [k for k in list(b) + [k for k in a if k not in b] if a.get(k) != b.get(k)]

    def show(v) -> str:
        return str(v) if isinstance(v, (str, int, float, bool)) or v is None else "…"

    parts = [f"{k} {show(a.get(k))} → {show(b.get(k))}" for k in keys[:limit]]
    return ", ".join(parts) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_out_dir(recipe, overwrite: bool = False) -> str:
    """Whether ``recipe`` may be built into its ``out_dir``: ``"fresh"`` (missing or empty),
    ``"same"`` (its own earlier build: resume / repair) or ``"replace"`` (an earlier build of
    another recipe, with ``overwrite``); raises :class:`InputError` otherwise.  Writes nothing."""
    out = Path(recipe.out_dir)
    if not out.exists():
        for parent in out.parents:  # a file where a folder should be: say so before any work
            if parent.exists():
                if not parent.is_dir():
                    raise InputError(out, f"cannot create the output folder: {parent} is a file")
                break
        return "fresh"
    if not out.is_dir():
        raise InputError(out, "the output folder is a file")
    if not any(out.iterdir()):
        return "fresh"
    work = out / WORK_DIR
    state, recorded = None, None
    if work.is_dir():
        state = "an unfinished build"
        if not (work / STARTED_RECIPE).exists() and _only_build_entries(out):
            return "same"  # interrupted before it recorded its recipe: resumable (shards are verified)
        recorded = _read_recipe(work / STARTED_RECIPE) if (work / STARTED_RECIPE).exists() else False
    elif _is_finished_build(out):
        state = "a finished build"
        recorded = _read_recipe(out / "recipe.yaml")
    if recorded is False or state is None:
        raise InputError(out, f"not empty and not a build folder (it holds {_listing(out)}): build into a new or "
                              "empty folder" + (" (--overwrite replaces only an earlier build)" if overwrite else ""))
    mine = _what(recipe)
    if recorded == mine:
        return "same"
    if overwrite:
        return "replace"
    diff = _differences(recorded, mine) if recorded is not None else "its recipe.yaml is unreadable"
    raise InputError(out, f"holds {state} of a different recipe ({diff}); pass --overwrite to replace it, "
                          "or build into another folder")


def claim_out_dir(recipe, mode: str) -> list[Path]:
    """Create the output folder (returns the folders created, outermost first), start afresh in
    ``.build/`` when replacing another recipe's unfinished build, and record the recipe there."""
    from als_datasets.recipe import dump_recipe
    from als_datasets.shards.writer import atomic_write

    out = Path(recipe.out_dir)
    created = [p for p in (*reversed(out.parents), out) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot create the output folder: {exc.strerror}") from None
    work = out / WORK_DIR
    if mode == "replace" and work.exists():
        shutil.rmtree(work)
    work.mkdir(exist_ok=True)
    text = dump_recipe(recipe)
    atomic_write(work / STARTED_RECIPE, lambda f: f.write(text.encode()))
    return created


def discard_out_dir(out: Path, created: list[Path]) -> None:
    """Undo a fresh start that failed on bad input: the folder was missing or empty, so everything
    in it is ours; a folder that existed (empty) before is kept, emptied."""
    out = Path(out)
    if out not in created:
        for p in list(out.iterdir()) if out.is_dir() else []:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return
    shutil.rmtree(out, ignore_errors=True)
    if out.exists():  # something could not be removed: keep what holds it
        return
    for d in reversed(created):
        try:
            d.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            break


def foreign_files(out: Path, shard_paths) -> list[str]:
    """Files of the folder (relative, posix) that the build did not write and that a push would
    upload (hidden files and folders are never uploaded): neither a listed shard nor one of
    :data:`BUILD_FILES`."""
    out = Path(out)
    mine = set(BUILD_FILES) | set(shard_paths)
    found = []
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.as_posix() not in mine:
            found.append(rel.as_posix())
    return found
