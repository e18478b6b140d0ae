"""Demo cache folders: generated once, atomically, reused after.

A demo is generated into a temporary sibling folder, a ``.complete`` marker written last, and the
folder moved into place with ``os.replace``, so an interrupted generation never leaves a half demo
behind and two processes racing to generate it both end with one complete copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def default_cache() -> Path:
    env = os.environ.get("ALS_DATASETS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "als-datasets"


def ensure_generated(target: Path, recipe_name: str, ours: set[str], make: Callable[[Path], object],
                     marker: str, what: str = "demo") -> Path:
    """``target/recipe_name``, calling ``make(tmp_folder)`` first when ``target`` holds no complete
    demo. A non-empty ``target`` holding files other than ``ours`` is refused (never overwritten)."""
    target = Path(target).expanduser().absolute()
    recipe = target / recipe_name
    if (target / ".complete").is_file() and recipe.is_file():
        return recipe
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and {p.name for p in target.iterdir()} - ours:
        from ..errors import InputError

        raise InputError(target, f"{what} folder is not empty and holds no complete demo; choose another folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        make(tmp)
        (tmp / ".complete").write_text(marker)
        if target.exists():
            if (target / ".complete").is_file():  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return recipe
            shutil.rmtree(target)  # a stale, incomplete demo of ours
        try:
            os.replace(tmp, target)
        except OSError:
            if (target / ".complete").is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                return recipe
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return recipe
