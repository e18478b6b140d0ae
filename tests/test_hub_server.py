"""The fake Hub in tests/hub_server.py against the real huggingface_hub and datasets clients."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.hub_server import HubServer, hub_env

REPO = "test-org/tiny"
N_ROWS = 7

README = """---
license: cc-by-4.0
pretty_name: Tiny
configs:
- config_name: default
  default: true
  data_files:
  - split: train
    path: data/train-*.parquet
---
# Tiny

A tiny test dataset.
"""


def _parquet_bytes(n: int = N_ROWS) -> bytes:
    table = pa.table(
        {"id": list(range(n)), "name": [f"row{i}" for i in range(n)], "x": [i * 0.5 for i in range(n)]}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _tar_bytes(keys=("k1", "k2", "k3")) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i, key in enumerate(keys):
            for name, data in (
                (f"{key}.json", json.dumps({"key": key, "label": i}).encode()),
                (f"{key}.x.npy", _npy_bytes(np.full((2, 3), i, dtype=np.float32))),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with HubServer(token="hf_fake_s3cr3t_0123456789abcdef") as server:
        hub_env(monkeypatch, server, tmp_path)
        yield server


@pytest.fixture
def api(hub):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.url, token=hub.token)


def _publish(api, hub, private: bool = False) -> str:
    from huggingface_hub import CommitOperationAdd

    url = api.create_repo(REPO, repo_type="dataset", private=private, exist_ok=True)
    assert REPO in str(url)
    api.create_repo(REPO, repo_type="dataset", private=private, exist_ok=True)  # 409 -> ok
    info = api.create_commit(
        REPO,
        repo_type="dataset",
        operations=[
            CommitOperationAdd("README.md", README.encode()),
            CommitOperationAdd("data/train-00000-of-00001.parquet", _parquet_bytes()),
            CommitOperationAdd("webdataset/train/shard-000000.tar", _tar_bytes()),
            CommitOperationAdd("meta/notes.json", b'{"a": 1}'),
        ],
        commit_message="add data",
    )
    assert info.oid == hub.head(REPO)
    return info.oid


def test_publish_and_load_with_datasets(hub, api):
    import datasets

    sha = _publish(api, hub)
    snap = hub.snapshot(REPO)
    assert set(snap) == {
        ".gitattributes",
        "README.md",
        "data/train-00000-of-00001.parquet",
        "webdataset/train/shard-000000.tar",
        "meta/notes.json",
    }
    assert snap["README.md"] == README.encode()
    assert hub.is_lfs(REPO, "data/train-00000-of-00001.parquet")
    assert hub.is_lfs(REPO, "webdataset/train/shard-000000.tar")
    assert not hub.is_lfs(REPO, "README.md")
    assert hub.count("PUT", r"/lfs-upload/", server="cdn") == 2

    info = api.dataset_info(REPO)
    assert info.sha == sha and info.private is False
    assert info.card_data is not None and info.card_data["pretty_name"] == "Tiny"
    assert [c["config_name"] for c in info.card_data["configs"]] == ["default"]

    ds = datasets.load_dataset(REPO, split="train")
    assert ds.num_rows == N_ROWS
    assert ds["name"] == [f"row{i}" for i in range(N_ROWS)]

    streamed = list(datasets.load_dataset(REPO, split="train", streaming=True))
    assert [r["id"] for r in streamed] == list(range(N_ROWS))

    wds = datasets.load_dataset(
        "webdataset", data_files=f"hf://datasets/{REPO}@{sha}/webdataset/train/*.tar", split="train"
    )
    assert wds.num_rows == 3
    assert sorted(wds["__key__"]) == ["k1", "k2", "k3"]
    assert np.asarray(wds[2]["x.npy"]).shape == (2, 3)
    assert wds[1]["json"]["label"] == 1

    wds_stream = datasets.load_dataset(
        "webdataset",
        data_files={"train": f"hf://datasets/{REPO}@{sha}/webdataset/train/*.tar"},
        split="train",
        streaming=True,
    )
    assert [r["__key__"] for r in wds_stream] == ["k1", "k2", "k3"]

    # the token only ever travelled in Authorization headers, and never to the cdn
    assert hub.token_leaks() == []
    assert any(r.headers.get("authorization") == f"Bearer {hub.token}" for r in hub.requests)
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert cdn and all("authorization" not in r.headers for r in cdn)


def test_listing_download_and_range(hub, api):
    from huggingface_hub import HfFileSystem, hf_hub_download
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    sha = _publish(api, hub)
    parquet = _parquet_bytes()

    files = api.list_repo_files(REPO, repo_type="dataset")
    assert "data/train-00000-of-00001.parquet" in files and "README.md" in files
    tree = list(api.list_repo_tree(REPO, repo_type="dataset", recursive=True, expand=True))
    by_path = {e.path: e for e in tree}
    assert isinstance(by_path["data"], RepoFolder)
    pq_entry = by_path["data/train-00000-of-00001.parquet"]
    assert isinstance(pq_entry, RepoFile) and pq_entry.size == len(parquet)
    assert pq_entry.lfs is not None and pq_entry.lfs.size == len(parquet)
    assert pq_entry.last_commit is not None and pq_entry.last_commit.oid == sha
    top = {e.path for e in api.list_repo_tree(REPO, repo_type="dataset")}
    assert top == {".gitattributes", "README.md", "data", "meta", "webdataset"}
    sub = [e.path for e in api.list_repo_tree(REPO, "webdataset/train", repo_type="dataset", revision=sha)]
    assert sub == ["webdataset/train/shard-000000.tar"]

    infos = api.get_paths_info(REPO, ["README.md", "data", "missing.txt"], repo_type="dataset")
    assert sorted((type(i).__name__, i.path) for i in infos) == [
        ("RepoFile", "README.md"),
        ("RepoFolder", "data"),
    ]

    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", sha)]
    commits = api.list_repo_commits(REPO, repo_type="dataset")
    assert [c.title for c in commits] == ["add data", "initial commit"]
    assert api.file_exists(REPO, "README.md", repo_type="dataset")
    assert not api.file_exists(REPO, "nope.md", repo_type="dataset")
    full = api.dataset_info(REPO, revision=sha, files_metadata=True)
    sib = {s.rfilename: s for s in full.siblings}
    assert sib["data/train-00000-of-00001.parquet"].lfs.sha256 == pq_entry.lfs.sha256
    assert api.whoami()["name"] == hub.user

    # downloads: regular file served directly, LFS file via a redirect to the cdn
    local = hf_hub_download(REPO, "data/train-00000-of-00001.parquet", repo_type="dataset", revision=sha)
    assert open(local, "rb").read() == parquet
    readme = hf_hub_download(REPO, "README.md", repo_type="dataset")
    assert open(readme, encoding="utf-8").read() == README

    import httpx2

    url = f"{hub.url}/datasets/{REPO}/resolve/main/data/train-00000-of-00001.parquet"
    auth = {"Authorization": f"Bearer {hub.token}"}
    head = httpx2.head(url, headers=auth)
    assert head.status_code == 302
    assert head.headers["X-Repo-Commit"] == sha
    assert head.headers["X-Linked-Size"] == str(len(parquet))
    r = httpx2.get(url, headers={**auth, "Range": "bytes=4-11"}, follow_redirects=True)
    assert r.status_code == 206 and r.content == parquet[4:12]
    assert r.headers["Content-Range"] == f"bytes 4-11/{len(parquet)}"
    r = httpx2.get(f"{hub.url}/datasets/{REPO}/resolve/{sha}/README.md", headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == README.encode()[-5:]
    r = httpx2.get(f"{hub.url}/datasets/{REPO}/resolve/main/nope.txt")
    assert r.status_code == 404 and r.headers["X-Error-Code"] == "EntryNotFound"
    r = httpx2.get(f"{hub.url}/datasets/test-org/unknown/resolve/main/README.md")
    assert r.status_code == 404 and r.headers["X-Error-Code"] == "RepoNotFound"

    fs = HfFileSystem(endpoint=hub.url, token=hub.token)
    with fs.open(f"datasets/{REPO}/data/train-00000-of-00001.parquet", "rb", block_size=16) as f:
        f.seek(len(parquet) - 8)
        assert f.read() == parquet[-8:]
    assert fs.cat_file(f"datasets/{REPO}@{sha}/meta/notes.json") == b'{"a": 1}'
    assert any("range" in r.headers for r in hub.requests if r.server == "cdn")
    assert hub.token_leaks() == []


def test_delete_commit_keeps_old_revision(hub, api):
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, hf_hub_download

    first = _publish(api, hub)
    second = api.create_commit(
        REPO,
        repo_type="dataset",
        operations=[
            CommitOperationDelete("meta/notes.json"),
            CommitOperationDelete("webdataset/", is_folder=True),
            CommitOperationAdd("meta/other.txt", b"hello"),
        ],
        commit_message="prune",
    ).oid
    assert second != first
    assert set(hub.snapshot(REPO)) == {
        ".gitattributes",
        "README.md",
        "data/train-00000-of-00001.parquet",
        "meta/other.txt",
    }
    assert "meta/notes.json" in hub.snapshot(REPO, rev=first)
    assert [c["sha"] for c in hub.main_history(REPO)][-2:] == [first, second]
    assert hf_hub_download(REPO, "meta/notes.json", repo_type="dataset", revision=first)
    from huggingface_hub.errors import EntryNotFoundError

    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "meta/notes.json", repo_type="dataset", revision=second)
    # deleting a missing file fails and changes nothing
    with pytest.raises(Exception, match="doesn't exist"):
        api.create_commit(
            REPO, repo_type="dataset", operations=[CommitOperationDelete("nope.txt")], commit_message="x"
        )
    assert hub.head(REPO) == second


def test_preupload_of_stored_lfs_object_uploads_nothing(hub, api):
    from huggingface_hub import CommitOperationAdd

    _publish(api, hub)
    n_put = hub.count("PUT")
    op = CommitOperationAdd("data/train-00001-of-00001.parquet", _parquet_bytes())  # same bytes, new path
    api.preupload_lfs_files(REPO, [op], repo_type="dataset")
    batch = [r for r in hub.requests if r.route.endswith("/info/lfs/objects/batch")][-1]
    assert hub.count("PUT") == n_put  # the batch answer carried no upload action
    assert json.loads(batch.body)["objects"][0]["oid"] == op.upload_info.sha256.hex()
    api.create_commit(REPO, repo_type="dataset", operations=[op], commit_message="second shard")
    assert hub.snapshot(REPO)["data/train-00001-of-00001.parquet"] == _parquet_bytes()

    # an unchanged file is dropped client-side thanks to the preupload "oid" (no empty commit)
    head = hub.head(REPO)
    api.create_commit(
        REPO,
        repo_type="dataset",
        operations=[CommitOperationAdd("README.md", README.encode())],
        commit_message="noop",
    )
    assert hub.head(REPO) == head


def test_fault_injection_leaves_main_unchanged(hub, api):
    import httpx2
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    sha = _publish(api, hub)
    before = hub.snapshot(REPO)
    rule = hub.fail_on("POST", r"/api/datasets/.+/commit/", status=500)
    with pytest.raises(HfHubHTTPError):
        api.create_commit(
            REPO,
            repo_type="dataset",
            operations=[
                CommitOperationAdd("big.bin", b"\x00" * 20_000),
                CommitOperationAdd("README.md", b"x"),
            ],
            commit_message="doomed",
        )
    assert rule.hits == 1
    assert hub.head(REPO) == sha and hub.snapshot(REPO) == before
    assert len(hub.lfs_objects(REPO)) == 3  # the LFS object was uploaded, but never committed

    # stale parent commit -> refused
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(
            REPO,
            repo_type="dataset",
            operations=[CommitOperationAdd("x.txt", b"x")],
            commit_message="stale",
            parent_commit=hub.main_history(REPO)[0]["sha"],
        )
    assert err.value.response.status_code == 412
    # an lfsFile whose object was never uploaded -> refused
    payload = b"\n".join(
        json.dumps(x).encode()
        for x in (
            {"key": "header", "value": {"summary": "sneaky"}},
            {"key": "lfsFile", "value": {"path": "y.bin", "algo": "sha256", "oid": "ab" * 32, "size": 3}},
        )
    )
    r = httpx2.post(
        f"{hub.url}/api/datasets/{REPO}/commit/main",
        content=payload,
        headers={"Authorization": f"Bearer {hub.token}", "Content-Type": "application/x-ndjson"},
    )
    assert 400 <= r.status_code < 500
    assert hub.head(REPO) == sha

    # the retry goes through and adds both files atomically
    api.create_commit(
        REPO,
        repo_type="dataset",
        operations=[CommitOperationAdd("big.bin", b"\x00" * 20_000), CommitOperationAdd("README.md", b"x")],
        commit_message="retry",
    )
    assert hub.snapshot(REPO)["big.bin"] == b"\x00" * 20_000 and hub.snapshot(REPO)["README.md"] == b"x"
    assert hub.token_leaks() == []


def test_auth_required(hub):
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    anon = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(HfHubHTTPError) as err:
        anon.create_repo("test-org/nope", repo_type="dataset")
    assert err.value.response.status_code == 401
    assert not hub.repo_exists("test-org/nope")
    r = httpx2.post(f"{hub.url}/api/datasets/{REPO}/preupload/main", json={"files": []})
    assert r.status_code == 401

    bad = HfApi(endpoint=hub.url, token="hf_wrong")
    with pytest.raises(HfHubHTTPError) as err:
        bad.create_repo("test-org/nope", repo_type="dataset")
    assert err.value.response.status_code == 401

    api = HfApi(endpoint=hub.url, token=hub.token)
    api.create_repo("test-org/secret", repo_type="dataset", private=True)
    assert api.dataset_info("test-org/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        anon.dataset_info("test-org/secret")
    with pytest.raises(RepositoryNotFoundError):
        anon.list_repo_files("test-org/secret", repo_type="dataset")
    r = httpx2.get(f"{hub.url}/datasets/test-org/secret/resolve/main/.gitattributes")
    assert r.status_code == 401
    r = httpx2.get(f"{hub.url}/api/whoami-v2")
    assert r.status_code == 401


def test_upload_folder_snapshot_branches_and_tags(hub, api, tmp_path):
    from huggingface_hub import CommitOperationAdd, snapshot_download
    from huggingface_hub.errors import BadRequestError

    api.create_repo(REPO, repo_type="dataset")
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    (src / "data" / "train-00000-of-00001.parquet").write_bytes(_parquet_bytes())
    (src / "README.md").write_text(README, encoding="utf-8")
    api.upload_folder(repo_id=REPO, repo_type="dataset", folder_path=src, commit_message="folder")
    assert hub.snapshot(REPO)["data/train-00000-of-00001.parquet"] == _parquet_bytes()

    api.create_branch(REPO, repo_type="dataset", branch="dev")
    api.create_commit(
        REPO,
        repo_type="dataset",
        revision="dev",
        operations=[CommitOperationAdd("dev.txt", b"d")],
        commit_message="d",
    )
    assert "dev.txt" in hub.snapshot(REPO, rev="dev") and "dev.txt" not in hub.snapshot(REPO)
    api.create_tag(REPO, repo_type="dataset", tag="v1.0")
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert sorted(b.name for b in refs.branches) == ["dev", "main"]
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0", hub.head(REPO))]

    local = snapshot_download(REPO, repo_type="dataset", revision="v1.0", cache_dir=tmp_path / "snap")
    assert (tmp_path / "snap").exists()
    assert (Path(local) / "data" / "train-00000-of-00001.parquet").read_bytes() == _parquet_bytes()

    head = hub.head(REPO)
    with pytest.raises(BadRequestError):
        api.create_commit(
            REPO,
            repo_type="dataset",
            operations=[CommitOperationAdd("pr.txt", b"p")],
            commit_message="pr",
            create_pr=True,
        )
    assert hub.head(REPO) == head
