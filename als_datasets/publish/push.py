"""Publish a build folder to the Hugging Face Hub, never half-visible (DESIGN.md §8).

``main`` moves in ONE commit from the old complete state to the new complete state:

1. the folder must pass ``validate`` (every shard against manifest.json, card consistent) —
   otherwise nothing is uploaded;
2. the shards' LFS objects are uploaded first (``preupload_lfs_files``, in batches, with
   progress); they are content-addressed and invisible until a commit points at them, so an
   interruption leaves ``main`` untouched, and a re-run uploads only the objects the Hub lacks;
3. one ``create_commit`` adds every new or changed file and deletes the files of the previous
   version that this one no longer has, with ``parent_commit`` set to the head we compared
   against (a concurrent change makes it fail instead of mixing two versions);
4. a re-run after success finds nothing to change and says so (no commit).

The token comes from ``--token``, ``HF_TOKEN`` or the huggingface_hub login, and is never
printed, logged or put on a command line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from als_datasets.errors import InputError

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
IGNORED_REMOTE = {".gitattributes"}


@dataclass
class PushResult:
    repo_id: str
    uploaded: int
    deleted: int
    unchanged: int
    commit: str | None  # None: nothing to do
    skipped: tuple[str, ...] = ()  # files in the folder the build did not write, left out (skip_unknown)

    @property
    def noop(self) -> bool:
        return self.commit is None


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def local_files(out: Path) -> list[Path]:
    """The files a push publishes: those the layout names (card, recipe, manifest, ``_info.json``,
    index, frame, Croissant, report) that the folder has, and every shard of the manifest — never
    a file the build did not write."""
    from als_datasets.dataset.outdir import BUILD_FILES

    out = Path(out)
    try:
        shards = [e["path"] for e in json.loads((out / "manifest.json").read_text())["shards"]]
    except (OSError, ValueError, KeyError, TypeError):
        shards = []
    named = sorted(set(shards) | {rel for rel in BUILD_FILES if (out / rel).is_file()})
    return [out / rel for rel in named]


def check_folder(out: Path, skip_unknown: bool = False) -> tuple[dict, list[str]]:
    """Validate before upload; returns the manifest and the files the build did not write (refused
    unless ``skip_unknown``: then listed and left out)."""
    from als_datasets.dataset.card import declared_configs, read_card_yaml
    from als_datasets.dataset.layout import validate
    from als_datasets.dataset.outdir import foreign_files

    out = Path(out)
    problems = validate(out)
    manifest = json.loads((out / "manifest.json").read_text())
    foreign = foreign_files(out, [e["path"] for e in manifest["shards"]])
    if skip_unknown:
        problems = [p for p in problems if p.split(": ", 1)[0] not in foreign]
    elif foreign:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputError(out, f"{len(foreign)} file(s) the build did not write: {listed}; remove them, or pass "
                              "--skip-unknown to publish without them; nothing uploaded")
    if problems:
        raise InputError(out, f"{len(problems)} problem(s) against manifest.json ({problems[0]}); nothing uploaded")
    if not (out / "README.md").is_file():
        raise InputError(out / "README.md", "missing: run `als-datasets report` first; nothing uploaded")
    try:
        configs = declared_configs(read_card_yaml(out))
    except Exception as exc:
        raise InputError(out / "README.md", f"card YAML unreadable: {exc}; nothing uploaded") from None
    for name, cfg in configs.items():
        if cfg["splits"] and cfg["splits"] != manifest["splits"]:
            raise InputError(out / "README.md", f"config {name!r} declares splits {cfg['splits']} but manifest.json "
                                                f"has {manifest['splits']}; nothing uploaded")
    return manifest, foreign


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unchanged(local: Path | bytes, remote) -> bool:
    size = len(local) if isinstance(local, bytes) else local.stat().st_size
    if remote is None or remote.size != size:
        return False
    if getattr(remote, "lfs", None):
        return remote.lfs.sha256 == (hashlib.sha256(local).hexdigest() if isinstance(local, bytes) else _sha256(local))
    return remote.blob_id == git_blob_sha1(local if isinstance(local, bytes) else local.read_bytes())


def _hub_error(repo_id: str, exc: Exception) -> InputError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if status == 401 or status == 403:
        return InputError(repo_id, f"the Hub refused the token ({status}): check --token / HF_TOKEN and its write access")
    return InputError(repo_id, f"Hub request failed{f' ({status})' if status else ''}: {first}")


def push(out_dir, repo_id: str, token: str | None = None, private: bool = False, force: bool = False,
         batch_size: int = 64, progress: Callable[[str, int, int], None] | None = None,
         skip_unknown: bool = False) -> PushResult:
    """Publish ``out_dir`` to the dataset repo ``repo_id`` (see the module docstring): the files
    of :func:`local_files`, with the card rendered for ``repo_id`` (its loading examples name it);
    a file the build did not write is refused, or with ``skip_unknown`` left out and listed in
    :attr:`PushResult.skipped`."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if not REPO_RE.match(repo_id or ""):
        raise InputError(repo_id, "not a Hub dataset name of the form ORG/NAME")
    out = Path(out_dir)
    manifest, skipped = check_folder(out, skip_unknown)
    from als_datasets.report.card import card_for_repo

    card = card_for_repo(out, repo_id).encode("utf-8")
    token = token or get_token()
    if not token:
        raise InputError(repo_id, "no Hugging Face token: pass --token, set HF_TOKEN or log in with `hf auth login`")
    api = HfApi(token=token)
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    # our own bar reports the uploads: huggingface_hub's tqdm bars would interleave with it
    quiet_hub = progress is not None and not are_progress_bars_disabled()
    if quiet_hub:
        disable_progress_bars()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        head = api.dataset_info(repo_id).sha
        remote = {f.path: f for f in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True, revision=head)
                  if hasattr(f, "blob_id")}
        content = {p for p in remote if p not in IGNORED_REMOTE}
        if content and "manifest.json" not in content and not force:
            raise InputError(repo_id, "the repo exists with unrelated content (no als-datasets manifest.json); "
                                      "choose another name or pass --force to replace it")
        files = local_files(out)
        rels: dict[str, Path | bytes] = {p.relative_to(out).as_posix(): p for p in files}
        rels["README.md"] = card
        adds, unchanged = [], 0
        for rel, p in rels.items():
            if _unchanged(p, remote.get(rel)):
                unchanged += 1
            else:
                adds.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=p if isinstance(p, bytes) else str(p)))
        deletes = [CommitOperationDelete(path_in_repo=r) for r in sorted(content - set(rels))]
        if not adds and not deletes:
            return PushResult(repo_id, 0, 0, unchanged, None, tuple(skipped))
        # shards (and other large files) first: uploaded, not yet visible
        shards = [a for a in adds if a.path_in_repo.startswith(("webdataset/", "parquet/"))]
        others = [a for a in adds if a not in shards]
        ordered = shards + others
        for i in range(0, len(ordered), batch_size):
            api.preupload_lfs_files(repo_id, additions=ordered[i:i + batch_size], repo_type="dataset")
            if progress:
                progress("uploading", min(i + batch_size, len(ordered)), len(ordered))
        # one commit flips main from the old complete state to the new one
        info = api.create_commit(
            repo_id, operations=[*ordered, *deletes], repo_type="dataset", parent_commit=head,
            commit_message=f"als-datasets: {manifest.get('name')} ({sum(manifest['splits'].values())} samples, "
                           f"{manifest.get('strategy')} sampling)",
        )
    except (HfHubHTTPError, RuntimeError, OSError) as exc:  # RuntimeError: huggingface_hub's failed LFS upload
        raise _hub_error(repo_id, exc.__cause__ if isinstance(exc, RuntimeError) and exc.__cause__ else exc) from None
    finally:
        if quiet_hub:
            enable_progress_bars()
    return PushResult(repo_id, len(adds), len(deletes), unchanged, info.oid, tuple(skipped))


def iter_hub_samples(repo_id: str, split: str = "train", revision: str = "main", token: str | None = None
                     ) -> Iterator[dict]:
    """Stream a published dataset's WebDataset shards without curl or pipes (the token stays in
    the HTTP client, never on a command line): only ``.npy`` (``allow_pickle=False``) and
    ``.json`` members are decoded; anything else is refused."""
    import io
    import tarfile

    import numpy as np
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem(token=token)
    root = f"datasets/{repo_id}@{revision}"
    info = json.loads(fs.read_text(f"{root}/_info.json"))
    for rel in info["splits"][split]["filenames"]:
        with fs.open(f"{root}/{rel}", "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            sample: dict = {}
            for m in tar:
                key, _, field = m.name.partition(".")
                if sample and sample["__key__"] != key:
                    yield sample
                    sample = {}
                data = tar.extractfile(m).read()
                if field.endswith(".npy"):
                    value = np.load(io.BytesIO(data), allow_pickle=False)
                elif field == "json" or field.endswith(".json"):
                    value = json.loads(data)
                else:
                    raise InputError(f"{repo_id}/{rel}", f"member {m.name!r} is not .npy or .json: refused")
                sample["__key__"] = key
                sample[field] = value
            if sample:
                yield sample
