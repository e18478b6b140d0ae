"""The command line: help, version, validate (flipped byte, truncated and missing shard)."""

from __future__ import annotations

import json

import pytest
from synth_inputs import DATA, landcover_around, write_recipe
from typer.testing import CliRunner

from als_datasets import __version__
from als_datasets.build import run_build
from als_datasets.cli import app
from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud
from als_datasets.recipe import load_recipe

runner = CliRunner()


def test_help_and_version():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("build", "plan", "validate"):
        assert cmd in r.output
    assert runner.invoke(app, ["--version"]).output.strip() == f"als-datasets {__version__}"
    r = runner.invoke(app, ["build", "--help"])
    for opt in ("--strategy", "--out", "--samples-per-project", "--seed", "--workers"):
        assert opt in r.output


def test_validate_detects_damage(tmp_path):
    mvk = DATA / "als" / "mvk-thin.las"
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(mvk)).bounds)
    rp = write_recipe(tmp_path / "r.yaml", name="v", samples_per_project=4, landcover={"path": "lc.tif"},
                      projects=[{"name": "v", "pointclouds": [str(mvk)]}], output={"dir": "out", "shard_max_samples": 2})
    out = run_build(load_recipe(rp)).out_dir
    assert runner.invoke(app, ["validate", str(out)]).exit_code == 0
    shards = json.loads((out / "manifest.json").read_text())["shards"]
    flip = out / shards[0]["path"]
    data = bytearray(flip.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flip.write_bytes(bytes(data))
    trunc = out / shards[1]["path"]
    trunc.write_bytes(trunc.read_bytes()[:-100])
    (out / shards[2]["path"]).unlink()
    r = runner.invoke(app, ["validate", str(out)])
    assert r.exit_code == 1
    assert "sha256" in r.output and "bytes" in r.output and "missing" in r.output


def test_interrupted_build_exits_nonzero(tmp_path):
    """Ctrl-C: exit 130 with the resume hint (typer returns, not raises, the code in main())."""
    import signal
    import subprocess
    import sys
    import time

    mvk = DATA / "als" / "mvk-thin.las"
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(mvk)).bounds)
    rp = write_recipe(tmp_path / "r.yaml", name="i", samples_per_project=9, landcover={"path": "lc.tif"},
                      projects=[{"name": "i", "pointclouds": [str(mvk)]}], output={"dir": "out", "shard_max_samples": 1})
    p = subprocess.Popen([sys.executable, "-m", "als_datasets", "build", str(rp), "-q"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "out").is_dir() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # wait until the build itself runs (not the interpreter's imports)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    if p.returncode == 0:  # finished before the signal: nothing was tested, say so
        pytest.skip("the build finished before SIGINT arrived")
    assert p.returncode == 130, err
    assert "re-run the same command to resume" in err


def _main_err(capsys, *args) -> tuple[int, str]:
    from als_datasets.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args,expected", [
    (["build", "--strategy", "geospatal"], "error: --strategy: unknown strategy 'geospatal' (choose from geospatial, random)"),
    (["build", "--workers", "0"], "'--workers'"),
    (["build", "--seed", "-3"], "'--seed'"),
    (["build", "--seed", "4294967296"], "'--seed'"),
    (["build", "-n", "0"], "'--samples-per-project'"),
    (["build", "--executor", "foo"], "error: --executor: unknown executor 'foo'"),
    (["build", "--scheduler", "tcp://x:1"], "error: --scheduler: needs --executor dask"),
    (["biuld"], "No such command 'biuld'"),
    (["pretrain", "--data", "x"], "Missing option '--model'"),
    (["report"], "Missing argument 'DIR...'"),
])
def test_bad_options_name_the_option_before_any_work(tmp_path, monkeypatch, capsys, args, expected):
    """One line naming what the user typed (never a cache file, never an exception class), exit 2,
    and nothing written (no demo generated, no output folder)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALS_DATASETS_CACHE", str(tmp_path / "cache"))
    code, err = _main_err(capsys, *args, "--out", str(tmp_path / "o")) if args[0] == "build" else \
        _main_err(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    for word in ("Error:", "BadParameter", "UsageError", "ValueError", "Traceback", ".cache"):
        assert word not in lines[0].split(":", 1)[1], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no demo cache, no output folder


def test_a_point_cloud_given_as_recipe(tmp_path, capsys):
    code, err = _main_err(capsys, "build", str(DATA / "als" / "mvk-thin.las"), "--out", str(tmp_path / "o"))
    assert code == 2 and "mvk-thin.las: this is a LAS/LAZ point cloud, not a recipe" in err
    assert "UnicodeDecodeError" not in err and not (tmp_path / "o").exists()
    binary = tmp_path / "r.yaml"
    binary.write_bytes(b"\x00\x91\xff" * 10)
    code, err = _main_err(capsys, "build", str(binary))
    assert code == 2 and err.strip() == f"error: {binary}: not a recipe: a binary file, where a YAML text file is expected"


def test_every_help_shows_debug():
    from als_datasets.cli import _register

    _register()
    assert "--debug" in runner.invoke(app, ["--help"]).output
    for cmd in ("build", "plan", "validate", "report", "push", "pretrain", "probe"):
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "--debug" in r.output, cmd


def test_debug_shows_the_traceback(tmp_path):
    from als_datasets.cli import main
    from als_datasets.errors import InputError

    with pytest.raises(InputError):
        main(["build", "--strategy", "nope", "--debug", "--out", str(tmp_path / "o")])


_NO_TORCH = """\
import sys
for name in ("torch", "triton", "torchvision"):
    sys.modules[name] = None  # as if not installed: find_spec() gives None, import raises ImportError
from als_datasets.cli import main
main(sys.argv[1:])
"""


def test_build_needs_no_torch(tmp_path):
    """The README's `pip install -e .` (no torch: it is the `train` extra) is enough to build,
    validate and report: run them with torch unimportable."""
    import os
    import subprocess
    import sys

    mvk = DATA / "als" / "mvk-thin.las"
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(mvk)).bounds)
    rp = write_recipe(tmp_path / "r.yaml", name="nt", samples_per_project=2, landcover={"path": "lc.tif"},
                      projects=[{"name": "nt", "pointclouds": [str(mvk)]}], output={"dir": "out"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DATA.parent.parent), os.environ.get("PYTHONPATH", "")])}
    for args in (["build", str(rp), "-q"], ["validate", str(tmp_path / "out")], ["report", str(tmp_path / "out")]):
        r = subprocess.run([sys.executable, "-c", _NO_TORCH, *args], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=600)
        assert r.returncode == 0, (args, r.stderr[-2000:])
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, "pretrain", "--data", str(tmp_path / "out"), "-m", "bev-mae"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 2 and "als-datasets[train]" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_a_short_draw_says_so_and_why(tmp_path, capsys):
    """ALS: more tiles asked for than a project has eligible; raster: the frame's reasons."""
    from types import SimpleNamespace

    import pandas as pd

    from als_datasets.cli import main
    from als_datasets.registry import get_kind

    mvk = DATA / "als" / "mvk-thin.las"
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(mvk)).bounds)
    rp = write_recipe(tmp_path / "r.yaml", name="short", samples_per_project=500, landcover={"path": "lc.tif"},
                      projects=[{"name": "p1", "pointclouds": [str(mvk)]}])
    main(["plan", str(rp), "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert "note: project p1: " in err and "of 500 tiles requested: only" in err and "are eligible" in err

    frame = pd.DataFrame({
        "selected": [True, True, False, False, False, False],
        "eligible": [True, True, False, False, False, True],
        "reason": ["", "", "cloud", "nodata", "overlap", ""],
        "draw_rank": pd.array([0, 1, None, None, None, None], dtype="Int64"),
    })
    recipe = SimpleNamespace(samples=5, strategy="continent:europe", max_nodata_fraction=0.05,
                             max_cloud_fraction=0.1, max_overlap=0.1)
    (line,) = get_kind("satellite").shortfall(SimpleNamespace(recipe=recipe, frame=frame))
    assert line == ("2 of 5 samples requested: only 2 of the 6 candidate patches could be drawn; 2 fail the nodata / "
                    "cloud thresholds (5% / 10%), 1 overlap a patch kept earlier by more than 10%, 1 are outside what "
                    "strategy 'continent:europe' draws from")
    recipe.samples = 2
    assert get_kind("satellite").shortfall(SimpleNamespace(recipe=recipe, frame=frame)) == []
