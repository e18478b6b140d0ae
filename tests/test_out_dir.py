"""The output folder (issue 12 item 8): ``build`` and ``plan`` write only into a new or empty
folder or their own build of the same recipe (resume / repair); ``--overwrite`` replaces an
earlier build of another recipe, never a folder that is not a build; a failed start leaves no
folder behind; ``validate`` (and so ``push``) refuses files the build did not write."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from synth_inputs import DATA, landcover_around, write_recipe

import als_datasets.build as build_mod
from als_datasets.build import run_build
from als_datasets.cli import main
from als_datasets.errors import InputError
from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud
from als_datasets.recipe import load_recipe

MVK = DATA / "als" / "mvk-thin.las"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A small ALS recipe (3 tiles, 2 per shard) and one finished build of it."""
    root = tmp_path_factory.mktemp("outdir")
    landcover_around(root / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds)
    rp = write_recipe(root / "r.yaml", name="od", samples_per_project=3, landcover={"path": "lc.tif"},
                      projects=[{"name": "od", "pointclouds": [str(MVK)]}], output={"shard_max_samples": 2})
    ref = run_build(load_recipe(rp, out_dir=root / "ref")).out_dir
    return rp, ref


def _digest(out):
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def _cli(args, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``als-datasets ARGS`` run in-process."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def _one_line(code, err, *expect):
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for s in expect:
        assert s in err, f"{s!r} not in {err!r}"


def _copy(ref, dst):
    shutil.copytree(ref, dst)
    return dst


def _foreign_folder(path):
    path.mkdir()
    (path / "notes.txt").write_text("my notes\n")
    (path / "sub").mkdir()
    (path / "sub" / "data.csv").write_text("a,b\n1,2\n")
    (path / "README.md").write_text("# my project\n")
    return _digest(path)


def test_build_and_plan_refuse_a_folder_that_is_not_a_build(tmp_path, inputs, capsys):
    rp, _ = inputs
    other = tmp_path / "existing"
    before = _foreign_folder(other)
    code, _, err = _cli(["build", rp, "--out", other, "-q"], capsys)
    _one_line(code, err, f"error: {other}: not empty and not a build folder", "README.md, notes.txt, sub/")
    code, _, err = _cli(["build", rp, "--out", other, "-q", "--overwrite"], capsys)  # never a non-build
    _one_line(code, err, str(other), "not a build folder", "--overwrite replaces only an earlier build")
    code, _, err = _cli(["plan", rp, "--out", other, "-q"], capsys)
    _one_line(code, err, str(other), "not a build folder")
    assert _digest(other) == before
    with pytest.raises(InputError, match="not a build folder"):
        run_build(load_recipe(rp, out_dir=other))
    assert _digest(other) == before


def test_a_work_folder_alone_does_not_make_a_build(tmp_path, inputs, capsys):
    """Another tool's ``.build/`` next to its files is not an interrupted build of ours; a bare
    ``.build/`` (killed before it recorded its recipe) is, and resumes."""
    rp, ref = inputs
    swift = tmp_path / "swift"
    (swift / ".build" / "debug").mkdir(parents=True)
    (swift / "Package.swift").write_text("// swift-tools-version:5.9\n")
    before = _digest(swift)
    code, _, err = _cli(["build", rp, "--out", swift, "-q"], capsys)
    _one_line(code, err, str(swift), "not a build folder (it holds .build/, Package.swift)")
    assert _digest(swift) == before
    bare = tmp_path / "bare"
    (bare / ".build").mkdir(parents=True)
    assert _cli(["build", rp, "--out", bare, "-q"], capsys)[0] == 0
    a, b = _digest(bare), _digest(ref)
    a.pop("recipe.yaml"), b.pop("recipe.yaml")
    assert a == b


def test_another_recipe_needs_overwrite(tmp_path, inputs, capsys):
    rp, ref = inputs
    out = _copy(ref, tmp_path / "out")  # recipe.yaml names ref as its folder: where, not what
    before = _digest(out)
    code, _, err = _cli(["build", rp, "--out", out, "-q", "--seed", "7"], capsys)
    _one_line(code, err, f"error: {out}: holds a finished build of a different recipe (seed 41 → 7)",
              "pass --overwrite")
    code, _, err = _cli(["build", rp, "--out", out, "-q", "--strategy", "random"], capsys)
    _one_line(code, err, "strategy geospatial → random")
    code, _, err = _cli(["plan", rp, "--out", out, "-q", "--seed", "7"], capsys)
    _one_line(code, err, "seed 41 → 7")
    assert _digest(out) == before
    # the same recipe: a re-run checks and keeps everything
    code, stdout, err = _cli(["build", rp, "--out", out, "-q"], capsys)
    assert code == 0 and "already complete" in stdout, err
    after = _digest(out)
    after.pop("recipe.yaml"), before.pop("recipe.yaml")  # rewritten: it names the folder
    assert after == before
    # --overwrite replaces it with the new recipe's build, as a fresh build would write it
    code, _, err = _cli(["build", rp, "--out", out, "-q", "--seed", "7", "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["seed"] == 7
    fresh = run_build(load_recipe(rp, out_dir=tmp_path / "fresh", overrides={"seed": 7})).out_dir
    a, b = _digest(out), _digest(fresh)
    a.pop("recipe.yaml"), b.pop("recipe.yaml")
    assert a == b
    assert _cli(["validate", out], capsys)[0] == 0
    code, stdout, err = _cli(["build", rp, "--out", out, "-q", "--seed", "7"], capsys)  # now its own build
    assert code == 0 and "already complete" in stdout, err


def test_failed_start_leaves_no_folder(tmp_path, inputs, capsys):
    rp, _ = inputs
    out = tmp_path / "a" / "b" / "out"
    bad = write_recipe(tmp_path / "bad.yaml", **{**_recipe_dict(rp), "output": {"shard_max_samples": 0}})
    code, _, err = _cli(["build", bad, "--out", out, "-q"], capsys)
    _one_line(code, err, "bad.yaml", "output.shard_max_samples")
    code, _, err = _cli(["build", rp, "--out", out, "-q", "--seed", "-3"], capsys)
    assert code != 0 and err
    code, _, err = _cli(["build", rp, "--out", out, "-q", "--strategy", "nope"], capsys)
    assert code == 2 and "nope" in err
    # bad input found while planning: the fresh folder (and its new parents) are removed again
    missing = write_recipe(tmp_path / "missing.yaml", **{**_recipe_dict(rp),
                                                         "projects": [{"name": "m", "pointclouds": ["gone.las"]}]})
    code, _, err = _cli(["build", missing, "--out", out, "-q"], capsys)
    _one_line(code, err, "gone.las")
    code, _, err = _cli(["plan", missing, "--out", out, "-q"], capsys)
    _one_line(code, err, "gone.las")
    assert not (tmp_path / "a").exists()
    (tmp_path / "empty").mkdir()  # an empty folder the user made is kept (and left empty)
    code, _, err = _cli(["build", missing, "--out", tmp_path / "empty", "-q"], capsys)
    _one_line(code, err, "gone.las")
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    # a file where the folder should be
    (tmp_path / "afile").write_text("x\n")
    code, _, err = _cli(["build", rp, "--out", tmp_path / "afile" / "sub", "-q"], capsys)
    _one_line(code, err, "afile", "output folder")


def _recipe_dict(rp):
    import yaml

    d = yaml.safe_load(rp.read_text())
    d["landcover"] = {"path": str(rp.parent / "lc.tif")}
    return d


def test_unfinished_build_resumes_or_needs_overwrite(tmp_path, inputs, monkeypatch):
    rp, ref = inputs
    out = tmp_path / "o"
    real = build_mod._run_shard
    calls = []

    def dying(task):
        calls.append(task)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(build_mod, "_run_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        run_build(load_recipe(rp, out_dir=out))
    monkeypatch.setattr(build_mod, "_run_shard", real)
    assert (out / ".build" / "recipe.yaml").is_file() and not (out / "manifest.json").exists()
    with pytest.raises(InputError, match=r"holds an unfinished build of a different recipe \(seed 41 → 9\)"):
        run_build(load_recipe(rp, out_dir=out, overrides={"seed": 9}))
    res = run_build(load_recipe(rp, out_dir=out))  # the same recipe resumes
    assert res.shards_skipped == 1
    a, b = _digest(out), _digest(ref)
    a.pop("recipe.yaml"), b.pop("recipe.yaml")
    assert a == b


def test_unfinished_build_of_another_recipe_is_replaced_with_overwrite(tmp_path, inputs, monkeypatch):
    rp, ref = inputs
    out = tmp_path / "o"
    monkeypatch.setattr(build_mod, "_run_shard", lambda task: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_build(load_recipe(rp, out_dir=out, overrides={"seed": 9}))
    monkeypatch.undo()
    run_build(load_recipe(rp, out_dir=out), overwrite=True)
    a, b = _digest(out), _digest(ref)
    a.pop("recipe.yaml"), b.pop("recipe.yaml")
    assert a == b


def test_plan_writes_into_the_builds_folder(tmp_path, inputs, capsys):
    rp, ref = inputs
    out = tmp_path / "p"
    assert _cli(["plan", rp, "--out", out, "-q"], capsys)[0] == 0
    assert (out / "frame.parquet").is_file() and (out / ".build" / "recipe.yaml").is_file()
    assert not (out / "pointclouds_needed.txt").exists()  # the kind's listing: next to the folder, not in it
    assert (tmp_path / "p.pointclouds_needed.txt").is_file()
    assert _cli(["plan", rp, "--out", out, "-q"], capsys)[0] == 0  # again: the same plan
    code, _, err = _cli(["plan", rp, "--out", out, "-q", "--seed", "7"], capsys)
    _one_line(code, err, "unfinished build of a different recipe (seed 41 → 7)")
    code, _, err = _cli(["build", rp, "--out", out, "-q"], capsys)  # the build continues from the plan
    assert code == 0, err
    a, b = _digest(out), _digest(ref)
    a.pop("recipe.yaml"), b.pop("recipe.yaml")
    assert a == b
    # plan into a finished build of the same recipe: its frame is that build's; the kind's listing
    # goes next to the folder, so the build stays valid (nothing a push would upload is added)
    before = _digest(out)
    assert _cli(["plan", rp, "--out", out, "-q"], capsys)[0] == 0
    assert _digest(out) == before
    assert _cli(["validate", out], capsys)[0] == 0
    assert _cli(["build", rp, "--out", out, "-q"], capsys)[0] == 0
    assert _digest(out) == before
    # --overwrite: the folder becomes an unfinished build of the new recipe
    assert _cli(["plan", rp, "--out", out, "-q", "--seed", "7", "--overwrite"], capsys)[0] == 0
    assert (out / ".build").is_dir()
    code, _, err = _cli(["build", rp, "--out", out, "-q", "--seed", "7"], capsys)
    assert code == 0, err
    assert _cli(["validate", out], capsys)[0] == 0


def test_validate_and_push_refuse_files_the_build_did_not_write(tmp_path, inputs, capsys):
    from als_datasets.publish.push import check_folder

    _, ref = inputs
    out = _copy(ref, tmp_path / "out")
    (out / "notes.txt").write_text("my notes\n")
    (out / "sub").mkdir()
    (out / "sub" / "data.csv").write_text("a,b\n")
    (out / "report" / "old.png").write_bytes(b"png")
    stale = out / "webdataset" / "train" / "shard-000099.tar"
    shutil.copy(next((out / "webdataset" / "train").glob("*.tar")), stale)
    (out / ".DS_Store").write_bytes(b"hidden: never uploaded")
    code, stdout, err = _cli(["validate", out], capsys)
    assert code == 1 and "valid" not in stdout
    lines = err.splitlines()
    assert sorted(lines) == sorted(f"{out}/{rel}: not written by the build (a push would upload it)" for rel in
                                   ("notes.txt", "sub/data.csv", "report/old.png", "webdataset/train/shard-000099.tar"))
    with pytest.raises(InputError, match="nothing uploaded"):
        check_folder(out)


def test_plots_listed_as_the_builds_files():
    from als_datasets.dataset.outdir import BUILD_FILES
    from als_datasets.report.plots import PLOT_FILES

    assert {f"report/{name}" for name in PLOT_FILES} <= BUILD_FILES


# ------------------------------------------------------------------ validate: counts and metadata
def _edit_json(path, fn):
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def _validate(out) -> tuple[int, list[str]]:
    from typer.testing import CliRunner

    from als_datasets.cli import app

    r = CliRunner().invoke(app, ["validate", str(out)])
    return r.exit_code, [ln[len(f"{out}/"):] for ln in r.stderr.splitlines()]


def test_validate_counts_samples_against_the_manifest(tmp_path, inputs):
    _, ref = inputs
    assert _validate(ref) == (0, [])
    # a shard entry claiming one sample more than its (intact) file holds
    out = _copy(ref, tmp_path / "more")
    _edit_json(out / "manifest.json", lambda m: m["shards"][0].update(samples=m["shards"][0]["samples"] + 1))
    code, lines = _validate(out)
    first = json.loads((ref / "manifest.json").read_text())["shards"][0]
    assert code == 1
    assert f"{first['path']}: holds {first['samples']} samples, manifest says {first['samples'] + 1}" in lines
    assert any(ln.startswith(f"manifest.json: {first['format']} shards of split 'train' hold") for ln in lines)
    # splits that say more samples than the shards hold (in both formats), _info and index disagree
    out = _copy(ref, tmp_path / "splits")
    _edit_json(out / "manifest.json", lambda m: m["splits"].update(train=m["splits"]["train"] + 5))
    code, lines = _validate(out)
    assert code == 1 and len(lines) == 4, lines
    assert {ln.split(" shards")[0] for ln in lines[:2]} == {"manifest.json: parquet", "manifest.json: webdataset"}
    assert lines[2].startswith("_info.json: split(s) 'train' disagree") and lines[3].startswith("index.parquet: 3 rows")


def test_validate_needs_info_and_shards(tmp_path, inputs, capsys):
    _, ref = inputs
    out = _copy(ref, tmp_path / "noinfo")
    (out / "_info.json").unlink()
    assert _validate(out) == (1, ["_info.json: missing"])
    (out / "_info.json").write_text("{not json")
    assert _validate(out) == (1, ["_info.json: not valid (needs splits → num_samples, filenames, shard_lengths)"])
    shutil.copy(ref / "_info.json", out / "_info.json")
    _edit_json(out / "_info.json", lambda i: i["splits"]["train"]["shard_lengths"].reverse())
    code, lines = _validate(out)
    assert code == 1 and lines[0].startswith("_info.json: split(s) 'train' disagree")
    # a build with no shards at all is never valid
    out = _copy(ref, tmp_path / "empty")
    for p in [*out.glob("webdataset/*/*.tar"), *out.glob("parquet/*/*.parquet")]:
        p.unlink()
    _edit_json(out / "manifest.json", lambda m: (m.update(shards=[], splits={})))
    _edit_json(out / "_info.json", lambda i: i.update(splits={}))
    code, lines = _validate(out)
    assert code == 1 and "manifest.json: no samples (the build wrote no shard that holds one)" in lines
    # a manifest without the fields validate needs: one line, no traceback
    _edit_json(out / "manifest.json", lambda m: m.update(shards=[{"path": "x"}]))
    code, _, err = _cli(["validate", out], capsys)
    assert code == 2 and err == f"error: {out}/manifest.json: not a build manifest (needs 'splits' and 'shards' with " \
                                "path, format, split, samples, bytes and sha256)"

