"""The four demo builds (ALS geospatial and random, satellite global, DEM) and the sha256 of every
file they write, so that a change that should not alter outputs (a refactor) can prove it.

``recipe.yaml`` records absolute paths (the demo cache, the output folder): they are replaced by
``$CACHE`` / ``$OUT`` before hashing, and ``manifest.json``'s resume fingerprints (raster tasks
fingerprint their scenes' paths) are left out of its hash.  Parquet and PNG bytes also depend on the writing library
(pyarrow, matplotlib): the versions used are recorded next to the hashes, and those files are
compared only when the versions match.

Record anew (only when a change *means* to alter outputs, and say so in the commit):

    python tests/golden_builds.py --record
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "golden" / "demo_builds.json"
ROOT = Path(__file__).resolve().parents[1]

#: build name → (recipe path relative to the repository or None for the embedded ALS demo, strategy)
BUILDS = {
    "als-geospatial": (None, "geospatial"),
    "als-random": (None, "random"),
    "satellite-global": ("builders/satellite-global.yaml", None),
    "dem-random": ("builders/dem-demo.yaml", None),
}
#: files whose bytes depend on a library's writer, and that library
VERSIONED = {".parquet": "pyarrow", ".png": "matplotlib"}


def library_versions() -> dict[str, str]:
    import matplotlib
    import numpy
    import pyarrow

    return {"pyarrow": pyarrow.__version__, "matplotlib": matplotlib.__version__, "numpy": numpy.__version__}


def build_all(out_root: Path) -> dict[str, Path]:
    """Run the four builds through the CLI's own path (recipe resolution included)."""
    from als_datasets.cli import main

    outs = {}
    for name, (recipe, strategy) in BUILDS.items():
        out = out_root / name
        args = ["build"] + ([str(ROOT / recipe)] if recipe else []) + ["--out", str(out), "--quiet"]
        if strategy:
            args += ["--strategy", strategy]
        try:
            main(args)
        except SystemExit as exc:  # main() exits only on failure
            raise AssertionError(f"build {name} failed with exit code {exc.code}") from None
        outs[name] = out
    return outs


def file_hashes(out: Path, cache: Path) -> dict[str, str]:
    hashes = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.name == "recipe.yaml":
            data = data.replace(str(out.resolve()).encode(), b"$OUT").replace(str(out).encode(), b"$OUT")
            data = data.replace(str(cache.resolve()).encode(), b"$CACHE").replace(str(cache).encode(), b"$CACHE")
        if p.name == "manifest.json":
            m = json.loads(data)
            for e in m.get("shards", []):
                e.pop("fingerprint", None)
            data = json.dumps(m, sort_keys=True).encode()
        hashes[p.relative_to(out).as_posix()] = hashlib.sha256(data).hexdigest()
    return hashes


def all_hashes(out_root: Path) -> dict[str, dict[str, str]]:
    cache = Path(os.environ["ALS_DATASETS_CACHE"])
    return {name: file_hashes(out, cache) for name, out in build_all(out_root).items()}


def compare(recorded: dict, found: dict[str, dict[str, str]]) -> tuple[list[str], list[str]]:
    """(differences, files not compared because their writer library changed)."""
    same_lib = {lib: recorded["versions"].get(lib) == v for lib, v in library_versions().items()}
    problems, skipped = [], []
    for name, files in recorded["builds"].items():
        got = found.get(name, {})
        for rel in sorted(set(files) | set(got)):
            lib = VERSIONED.get(Path(rel).suffix)
            if lib and not same_lib[lib]:
                skipped.append(f"{name}/{rel}")
                continue
            if rel not in got:
                problems.append(f"{name}/{rel}: not written")
            elif rel not in files:
                problems.append(f"{name}/{rel}: written, not recorded")
            elif got[rel] != files[rel]:
                problems.append(f"{name}/{rel}: sha256 differs")
    return problems, skipped


if __name__ == "__main__":
    import tempfile

    if "--record" not in sys.argv:
        sys.exit("usage: python tests/golden_builds.py --record")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ALS_DATASETS_CACHE", str(Path(tmp) / "cache"))
        found = all_hashes(Path(tmp) / "out")
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps({"versions": library_versions(), "builds": found}, indent=1, sort_keys=True) + "\n")
    print(f"recorded {sum(len(v) for v in found.values())} files of {len(found)} builds in {GOLDEN}")
