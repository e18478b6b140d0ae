"""`als-datasets push` against the in-process Hub (tests/hub_server.py): load_dataset of the declared
config and of the tars (map-style and streaming) returns the local samples; a failure at any step leaves `main`
at the old or the new complete state; re-runs resume; a second push is a no-op; the token never
appears in output or logs."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from synth_inputs import DATA, landcover_around, write_recipe
from typer.testing import CliRunner

from als_datasets.build import run_build
from als_datasets.cli import app
from als_datasets.errors import InputError
from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud
from als_datasets.recipe import load_recipe
from tests.hub_server import HubServer, hub_env

REPO = "test-org/als-mvk"
MVK = DATA / "als" / "mvk-thin.las"


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Two versions of a small build (4 and 6 tiles per project)."""
    root = tmp_path_factory.mktemp("push-builds")
    landcover_around(root / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds)
    rp = write_recipe(root / "r.yaml", name="mvk", samples_per_project=4, landcover={"path": "lc.tif"},
                      license="cc-by-4.0", projects=[{"name": "mvk", "pointclouds": [str(MVK)]}],
                      output={"shard_max_samples": 2})
    v1 = run_build(load_recipe(rp, out_dir=root / "v1")).out_dir
    v2 = run_build(load_recipe(rp, out_dir=root / "v2", overrides={"samples_per_project": 6})).out_dir
    return v1, v2


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import huggingface_hub.utils._http as hf_http

    # the client retries 5xx with 1-8 s sleeps; the fake Hub needs no waiting
    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)
    with HubServer() as server:
        hub_env(monkeypatch, server, tmp_path)
        yield server


def _local_files(out, repo=REPO):
    """What a push of ``out`` to ``repo`` publishes: the build's files, the card rendered for ``repo``."""
    from als_datasets.publish.push import local_files
    from als_datasets.report.card import card_for_repo

    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in local_files(out)}
    files["README.md"] = card_for_repo(out, repo).encode()
    return files


def _main(hub):
    snap = hub.snapshot(REPO)
    snap.pop(".gitattributes", None)
    return snap


def test_push_then_load_both_configs(hub, builds):
    from datasets import load_dataset

    from als_datasets.publish.push import iter_hub_samples, push

    v1, _ = builds
    res = push(v1, REPO)
    assert res.commit and res.uploaded == len(_local_files(v1))
    assert _main(hub) == _local_files(v1)
    assert len(hub.main_history(REPO)) == 2  # the repo's creation, then ONE commit with everything
    local = {r["__key__"]: r for r in load_dataset(str(v1), split="train")}
    remote = load_dataset(REPO, split="train")
    assert sorted(r["__key__"] for r in remote) == sorted(local)
    for r in remote:
        assert r["json"] == local[r["__key__"]]["json"]
        assert np.array_equal(np.asarray(r["xyz.npy"]), np.asarray(local[r["__key__"]]["xyz.npy"]))
    streamed = list(load_dataset(REPO, split="train", streaming=True))
    assert sorted(r["__key__"] for r in streamed) == sorted(local)
    from als_datasets.dataset.card import declared_configs, read_card_yaml

    for name in declared_configs(read_card_yaml(v1)):  # every declared config, as the card invites
        assert sorted(load_dataset(REPO, name, split="train")["__key__"]) == sorted(local)
        assert sorted(r["__key__"] for r in load_dataset(REPO, name, split="train", streaming=True)) == sorted(local)
    head = hub.head(REPO, "main")
    wds_map = load_dataset("webdataset", data_files=f"hf://datasets/{REPO}@{head}/webdataset/train/*.tar", split="train")
    wds_stream = load_dataset("webdataset", data_files=f"hf://datasets/{REPO}@{head}/webdataset/train/*.tar",
                              split="train", streaming=True)
    assert sorted(wds_map["__key__"]) == sorted(local) == sorted(r["__key__"] for r in wds_stream)
    from als_datasets.dataset.card import load_config

    wds_cfg = load_config(REPO, "webdataset", split="train")
    assert sorted(wds_cfg["__key__"]) == sorted(local)
    assert wds_cfg.features == remote.features
    wds_cfg_stream = load_config(REPO, "webdataset", split="train", streaming=True)
    assert sorted(r["__key__"] for r in wds_cfg_stream) == sorted(local)
    samples = list(iter_hub_samples(REPO))
    assert sorted(s["__key__"] for s in samples) == sorted(local)
    s = samples[0]
    assert np.array_equal(s["xyz.npy"], np.asarray(local[s["__key__"]]["xyz.npy"], dtype=np.float32))


def test_second_push_is_noop(hub, builds):
    from als_datasets.publish.push import push

    v1, _ = builds
    push(v1, REPO)
    n_commits = len(hub.main_history(REPO))
    hub.clear_log()
    res = push(v1, REPO)
    assert res.noop and res.uploaded == 0
    assert len(hub.main_history(REPO)) == n_commits
    assert hub.count("PUT", ".*") == 0 and hub.count("POST", r".*/commit/.*") == 0


STAGES = [("POST", r"/preupload/"), ("POST", r"info/lfs/objects/batch"), ("PUT", r".*"), ("POST", r"/commit/")]


@pytest.mark.parametrize("method,path", STAGES, ids=["preupload", "lfs-batch", "lfs-upload", "commit"])
def test_failure_at_any_step_never_half_visible(hub, builds, method, path):
    from als_datasets.publish.push import push

    v1, v2 = builds
    push(v1, REPO)
    old = _main(hub)
    hub.fail_on(method, path, nth=1, status=500, times=10_000)  # outlast the client's retries
    with pytest.raises(InputError):
        push(v2, REPO)
    assert _main(hub) == old  # main still shows the old complete version
    hub.clear_faults()
    res = push(v2, REPO)  # the re-run resumes and completes
    assert res.commit
    assert _main(hub) == _local_files(v2)  # the new complete version; v1's extra files are gone


def test_resume_uploads_only_missing_objects(hub, builds):
    from als_datasets.publish.push import push

    v1, _ = builds
    hub.fail_on("POST", r"/commit/", nth=1, status=500)
    with pytest.raises(InputError):
        push(v1, REPO)
    uploaded_first = hub.count("PUT", ".*")
    assert uploaded_first > 0
    hub.clear_log()
    push(v1, REPO)
    assert hub.count("PUT", ".*") == 0  # every LFS object was already there
    assert _main(hub) == _local_files(v1)


def test_cli_push_never_shows_the_token(hub, builds, caplog):
    v1, _ = builds
    caplog.set_level(logging.DEBUG)
    r = CliRunner().invoke(app, ["push", str(v1), REPO, "--token", hub.token, "-q"])
    assert r.exit_code == 0, r.output
    r2 = CliRunner().invoke(app, ["push", str(v1), REPO, "-q"])
    assert "already up to date" in r2.output
    assert hub.token not in r.output + r2.output + caplog.text
    assert hub.token_leaks() == []


def test_errors(hub, builds, monkeypatch, tmp_path):
    import shutil

    from als_datasets.publish.push import push

    v1, _ = builds
    with pytest.raises(InputError, match="ORG/NAME"):
        push(v1, "no-slash")
    # an unrelated repo
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=hub.token)
    api.create_repo("test-org/other", repo_type="dataset")
    api.create_commit("test-org/other", repo_type="dataset", commit_message="x",
                      operations=[CommitOperationAdd("data.csv", b"a,b\n1,2\n")])
    with pytest.raises(InputError, match="unrelated content"):
        push(v1, "test-org/other")
    # a damaged build uploads nothing
    bad = tmp_path / "bad"
    shutil.copytree(v1, bad)
    shard = next((bad / "webdataset" / "train").glob("*.tar"))
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")
    hub.clear_log()
    with pytest.raises(InputError, match="nothing uploaded"):
        push(bad, REPO)
    assert hub.requests == []
    # no token anywhere
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(InputError, match="no Hugging Face token"):
        push(v1, REPO)
    r = CliRunner().invoke(app, ["push", str(v1), REPO, "-q"])
    assert r.exit_code != 0


def test_manifest_round_trip(hub, builds):
    from huggingface_hub import hf_hub_download

    from als_datasets.publish.push import push

    v1, _ = builds
    push(v1, REPO)
    path = hf_hub_download(REPO, "manifest.json", repo_type="dataset")
    assert json.loads(open(path).read()) == json.loads((v1 / "manifest.json").read_text())


def test_push_publishes_only_the_builds_files_without_local_paths(hub, builds, tmp_path):
    """Only what manifest and layout name (a stray file refuses the push, or is left out and listed
    with skip_unknown); no absolute path of this machine in any published file; the card's loading
    examples name the target repo."""
    import os
    import shutil
    from pathlib import Path

    from als_datasets.publish.push import push

    v1, _ = builds
    out = tmp_path / "v1"
    shutil.copytree(v1, out)
    (out / "notes.txt").write_text("private notes\n")
    (out / "sub").mkdir()
    (out / "sub" / "x.csv").write_text("a\n")
    hub.clear_log()
    with pytest.raises(InputError, match="2 file.s. the build did not write: notes.txt, sub/x.csv"):
        push(out, REPO)
    assert hub.requests == []  # refused before any request
    res = push(out, REPO, skip_unknown=True)
    assert res.skipped == ("notes.txt", "sub/x.csv")
    published = _main(hub)
    assert "notes.txt" not in published and "sub/x.csv" not in published
    assert set(published) == set(_local_files(v1))
    card = published["README.md"].decode()
    assert f'load_dataset("{REPO}"' in card and "ORG/" not in card
    home = os.path.expanduser("~")
    local = [str(Path(v1).resolve().parent), str(tmp_path), str(Path(__file__).resolve().parent.parent)]
    if home not in ("/", ""):
        local.append(home)
    for rel, data in published.items():
        for path in local:
            assert path.encode() not in data, f"{rel} holds the local path {path}"
    r = CliRunner().invoke(app, ["push", str(out), REPO, "-q", "--skip-unknown"])
    assert r.exit_code == 0 and "already up to date" in r.output
