"""An in-process fake of the Hugging Face Hub, for tests that must not reach the network.

``HubServer`` runs two stdlib ``ThreadingHTTPServer`` instances on 127.0.0.1 (ephemeral ports):

* the *hub* (``hub.url``): the subset of the Hub HTTP API that ``huggingface_hub`` (2.x, LFS path,
  ``HF_HUB_DISABLE_XET=1``) and ``datasets`` call for model/dataset/space repos;
* the *cdn* (``hub.cdn_url``): where LFS objects are uploaded to (signed ``PUT`` hrefs handed out by
  the LFS batch API) and downloaded from (``resolve`` of an LFS file answers ``302`` to a signed URL
  there, like the real Hub redirects to its CDN). Being another origin, clients drop the
  ``Authorization`` header on that hop, which the request log lets tests check.

State lives in memory: per repo, commits (each one a full ``path -> entry`` snapshot), branches,
tags and its LFS object store. Commit shas are deterministic (sha1 of parent, tree and message).

Usage::

    with HubServer(token="hf_fake_token") as hub:
        hub_env(monkeypatch, hub, tmp_path)  # HF_ENDPOINT & co, and the already-imported constants
        HfApi().create_repo("org/name", repo_type="dataset")
        ...
        hub.snapshot("org/name")  # {path: bytes} of main

Fault injection: ``hub.fail_on("POST", r"/commit/", nth=1, status=500)`` or
``hub.fail_next(lambda req: ..., status=500)``; a matching request is answered with the error before
anything is applied. The request log (``hub.requests``) records method, path, status, headers and body
of every request both servers received; ``hub.token_leaks()`` lists places where the token appears
anywhere but an ``Authorization`` header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["HubServer", "RequestRecord", "hub_env", "git_blob_sha1", "lfs_pointer"]

REPO_TYPES = ("model", "dataset", "space")
_TYPE_FROM_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}

#: extensions stored through LFS whatever their size (the Hub decides this from .gitattributes)
LFS_EXTENSIONS = (
    ".parquet",
    ".arrow",
    ".tar",
    ".npy",
    ".npz",
    ".bin",
    ".safetensors",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".zip",
    ".gz",
    ".zst",
    ".bz2",
    ".xz",
    ".7z",
    ".laz",
    ".las",
    ".tif",
    ".tiff",
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".pkl",
    ".pickle",
    ".onnx",
    ".msgpack",
    ".joblib",
    ".lz4",
    ".mds",
)

GITATTRIBUTES = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS).encode()

_DATE0 = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as ``oid`` / ``ETag`` for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    """The git-lfs pointer file committed in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class _Entry:
    """A file in a commit: either a regular git blob (``data``) or an LFS pointer (``lfs_oid``)."""

    size: int
    data: bytes | None = None
    lfs_oid: str | None = None

    @property
    def is_lfs(self) -> bool:
        return self.lfs_oid is not None

    @property
    def blob_id(self) -> str:
        if self.lfs_oid is not None:
            return git_blob_sha1(lfs_pointer(self.lfs_oid, self.size))
        return git_blob_sha1(self.data or b"")

    @property
    def etag(self) -> str:
        return self.lfs_oid if self.lfs_oid is not None else self.blob_id


@dataclass
class _Commit:
    sha: str
    parent: str | None
    files: dict[str, _Entry]
    title: str
    message: str
    date: float


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: float
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return _URL_PREFIX[self.repo_type] + self.repo_id


@dataclass
class RequestRecord:
    """One request received by the hub or the cdn server."""

    server: str  # "hub" or "cdn"
    method: str
    path: str  # raw path, query string included
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int = 0
    injected: bool = False  # answered by a fault-injection rule

    @property
    def route(self) -> str:
        return urlsplit(self.path).path


@dataclass
class _FaultRule:
    predicate: Callable[[RequestRecord], bool]
    status: int
    skip: int
    times: int
    message: str
    hits: int = 0


class _HubError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


def _not_found_repo() -> _HubError:
    return _HubError(404, "Repository not found", "RepoNotFound")


# --------------------------------------------------------------------------------------------- server


class HubServer:
    """A fake Hugging Face Hub. See the module docstring.

    Args:
        token: the only token accepted (``Authorization: Bearer <token>``); a fresh fake one if omitted.
        user: the user name ``whoami`` answers and the default commit author.
        lfs_threshold: files of at least this many bytes are uploaded through LFS (``preupload``).
        lfs_redirect: ``resolve`` of an LFS file answers 302 to the cdn server (like the Hub); if False
            the hub serves the bytes itself.
        gitattributes: new repos get an initial commit holding a ``.gitattributes`` (like the Hub).
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        user: str = "fake-user",
        lfs_threshold: int = 10_000,
        lfs_redirect: bool = True,
        gitattributes: bool = True,
    ):
        self.token = token or "hf_fake_" + secrets.token_hex(12)
        self.user = user
        self.lfs_threshold = lfs_threshold
        self.lfs_redirect = lfs_redirect
        self.gitattributes = gitattributes
        self._secret = secrets.token_bytes(16)
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._log: list[RequestRecord] = []
        self._rules: list[_FaultRule] = []
        self._clock = 0
        self._hub: ThreadingHTTPServer | None = None
        self._cdn: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set = set()  # open client sockets, closed on stop() so no keep-alive outlives us

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> HubServer:
        if self._hub is not None:
            return self
        self._hub = _make_server(self, "hub")
        self._cdn = _make_server(self, "cdn")
        for srv in (self._hub, self._cdn):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for srv in (self._hub, self._cdn):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        self._hub = self._cdn = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._hub is not None, "server not started"
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        assert self._cdn is not None, "server not started"
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    # ----------------------------------------------------------------------------- test helpers

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log (both servers, arrival order)."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def count(
        self, method: str | None = None, path_regex: str | None = None, server: str | None = None
    ) -> int:
        """How many logged requests match (``path_regex`` is searched in the raw path)."""
        rx = re.compile(path_regex) if path_regex else None
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (rx is None or rx.search(r.path))
            and (server is None or r.server == server)
        )

    def token_leaks(self, token: str | None = None) -> list[str]:
        """Where the token appears in a request other than in an ``Authorization`` header."""
        tok = token or self.token
        leaks = []
        for i, r in enumerate(self.requests):
            where = f"#{i} {r.server} {r.method} {r.route}"
            if tok in r.path or quote(tok) in r.path:
                leaks.append(f"{where}: path")
            for k, v in r.headers.items():
                if k.lower() != "authorization" and tok in v:
                    leaks.append(f"{where}: header {k}")
            if tok.encode() in r.body:
                leaks.append(f"{where}: body")
        return leaks

    def fail_next(
        self,
        predicate: Callable[[RequestRecord], bool],
        status: int = 500,
        *,
        nth: int = 1,
        times: int = 1,
        message: str = "Injected failure",
    ) -> _FaultRule:
        """Answer the ``nth`` request matching ``predicate`` (and the ``times - 1`` following matches)
        with ``status`` before any change is applied. Returns the rule (``rule.hits`` counts its uses)."""
        rule = _FaultRule(predicate, status, max(nth - 1, 0), times, message)
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail_on(
        self,
        method: str,
        path_regex: str,
        nth: int = 1,
        status: int = 500,
        *,
        times: int = 1,
        message: str = "Injected failure",
    ) -> _FaultRule:
        """``fail_next`` for requests with this method whose raw path matches ``path_regex`` (re.search)."""
        rx = re.compile(path_regex)
        m = method.upper()
        return self.fail_next(
            lambda r: r.method == m and rx.search(r.path) is not None,
            status,
            nth=nth,
            times=times,
            message=message,
        )

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def add_repo(self, repo_id: str, repo_type: str = "dataset", private: bool = False) -> None:
        """Create a repo directly (no HTTP)."""
        with self._lock:
            self._create_repo(repo_type, repo_id, private)

    def repo_exists(self, repo_id: str, repo_type: str = "dataset") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def head(self, repo_id: str, rev: str = "main", repo_type: str = "dataset") -> str:
        """The commit sha ``rev`` resolves to."""
        with self._lock:
            return self._resolve(self._get_repo(repo_type, repo_id), rev).sha

    def snapshot(self, repo_id: str, rev: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """The files of ``rev`` as ``{path: content}`` (LFS files resolved to their content)."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._resolve(repo, rev)
            return {p: self._content(repo, e) for p, e in sorted(commit.files.items())}

    def is_lfs(self, repo_id: str, path: str, rev: str = "main", repo_type: str = "dataset") -> bool:
        with self._lock:
            return self._resolve(self._get_repo(repo_type, repo_id), rev).files[path].is_lfs

    def main_history(
        self, repo_id: str, repo_type: str = "dataset", branch: str = "main"
    ) -> list[dict[str, Any]]:
        """The commits of ``branch``, oldest first: ``{"sha", "title", "message", "files": sorted paths}``."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            out = []
            sha: str | None = repo.branches[branch]
            while sha is not None:
                c = repo.commits[sha]
                out.append({"sha": c.sha, "title": c.title, "message": c.message, "files": sorted(c.files)})
                sha = c.parent
            return out[::-1]

    def lfs_objects(self, repo_id: str, repo_type: str = "dataset") -> dict[str, int]:
        """The LFS objects uploaded to a repo (committed or not): ``{sha256: size}``."""
        with self._lock:
            return {oid: len(b) for oid, b in self._get_repo(repo_type, repo_id).lfs.items()}

    # ----------------------------------------------------------------------------- internals: state

    def _now(self) -> float:
        # strictly increasing timestamps, so that commit dates order like the history
        with self._lock:
            self._clock += 1
            return max(time.time(), _DATE0 + self._clock)

    def _create_repo(self, repo_type: str, repo_id: str, private: bool) -> _Repo:
        repo = _Repo(repo_type, repo_id, private, created=self._now())
        files = (
            {".gitattributes": _Entry(len(GITATTRIBUTES), data=GITATTRIBUTES)} if self.gitattributes else {}
        )
        c = self._make_commit(repo, None, files, "initial commit", "")
        repo.branches["main"] = c.sha
        self._repos[(repo_type, repo_id)] = repo
        return repo

    def _make_commit(
        self, repo: _Repo, parent: str | None, files: dict[str, _Entry], title: str, message: str
    ) -> _Commit:
        h = hashlib.sha1()
        h.update(f"{repo.repo_type}/{repo.repo_id}\n{parent or ''}\n{title}\n{message}\n".encode())
        for p in sorted(files):
            h.update(f"{p}\0{files[p].blob_id}\n".encode())
        sha = h.hexdigest()
        while sha in repo.commits:  # identical commit on identical parent: keep shas unique
            sha = hashlib.sha1(sha.encode()).hexdigest()
        c = _Commit(sha, parent, dict(files), title, message, self._now())
        repo.commits[sha] = c
        return c

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r}")
        return repo

    def _resolve(self, repo: _Repo, rev: str) -> _Commit:
        rev = unquote(rev)
        for name in (rev, rev.removeprefix("refs/heads/"), rev.removeprefix("refs/tags/")):
            if name in repo.branches:
                return repo.commits[repo.branches[name]]
            if name in repo.tags:
                return repo.commits[repo.tags[name]]
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            hits = [c for sha, c in repo.commits.items() if sha.startswith(rev)]
            if len(hits) == 1:
                return hits[0]
        raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _content(self, repo: _Repo, e: _Entry) -> bytes:
        return repo.lfs[e.lfs_oid] if e.lfs_oid is not None else (e.data or b"")

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "\n".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


# --------------------------------------------------------------------------------------------- HTTP


def _make_server(hub: HubServer, role: str) -> ThreadingHTTPServer:
    handler = type(f"_{role.title()}Handler", (_Handler,), {"hub": hub, "role": role})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    return srv


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    role: str
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def setup(self):
        super().setup()
        with self.hub._lock:
            self.hub._conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.hub._lock:
                self.hub._conns.discard(self.connection)

    def log_message(self, format, *args):  # noqa: A002 - silence stderr logging
        pass

    # every method goes through _dispatch
    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    # -------------------------------------------------------------------------------- plumbing

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _dispatch(self) -> None:
        body = self._read_body()
        rec = RequestRecord(
            self.role, self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        hub = self.hub
        with hub._lock:
            hub._log.append(rec)
            rule = next((r for r in hub._rules if r.times > 0 and r.predicate(rec)), None)
            if rule is not None and rule.skip > 0:
                rule.skip -= 1
                rule = None
            elif rule is not None:
                rule.times -= 1
                rule.hits += 1
        self.rec = rec
        self.body = body
        split = urlsplit(self.path)
        self.query = {k: v for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            if rule is not None:
                rec.injected = True
                raise _HubError(rule.status, rule.message)
            segs = [unquote(s) for s in split.path.split("/")[1:]]
            if self.role == "cdn":
                self._route_cdn(segs)
            else:
                self._route_hub(segs)
        except _HubError as e:
            headers = dict(e.headers)
            if e.code:
                headers["X-Error-Code"] = e.code
            headers["X-Error-Message"] = e.message
            self._send_json({**e.extra, "error": e.message}, e.status, headers)
        except Exception as e:  # a bug in the fake: make it visible in the test failure
            self._send_json({"error": f"fake hub crashed: {type(e).__name__}: {e}"}, 500)
        self._write_pending()

    def _send(
        self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str | None = None
    ) -> None:
        """Queue the response; ``_dispatch`` writes it once the state lock is released."""
        hdrs = dict(headers or {})
        if content_type:
            hdrs.setdefault("Content-Type", content_type)
        hdrs.setdefault("Content-Length", str(len(body)))
        self._pending = (status, body, hdrs)

    def _write_pending(self) -> None:
        status, body, hdrs = self._pending
        self.rec.status = status
        self.send_response(status)
        for k, v in hdrs.items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, obj: Any, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers, "application/json; charset=utf-8")

    def _q(self, name: str, default: str | None = None) -> str | None:
        v = self.query.get(name)
        return v[-1] if v else default

    def _qbool(self, name: str) -> bool:
        return (self._q(name) or "").lower() in ("1", "true", "yes")

    def _json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as e:
            raise _HubError(400, f"Invalid JSON body: {e}") from None

    # -------------------------------------------------------------------------------- auth

    def _auth(self) -> bool | None:
        """True: the server's token; None: no Authorization header; False: another token."""
        h = self.headers.get("Authorization")
        if h is None:
            return None
        return hmac.compare_digest(h.encode(), f"Bearer {self.hub.token}".encode())

    def _require_write(self) -> None:
        ok = self._auth()
        if ok is None:
            raise _HubError(401, "You must be authenticated to access this resource")
        if not ok:
            raise _HubError(401, "Invalid credentials in Authorization header")

    def _repo_for_read(self, repo_type: str, repo_id: str) -> _Repo:
        ok = self._auth()
        if ok is False:
            raise _HubError(401, "Invalid credentials in Authorization header")
        repo = self.hub._repos.get((repo_type, repo_id))
        if repo is None:
            raise _not_found_repo()
        if repo.private and not ok:
            raise _HubError(401, "Repository not found", "RepoNotFound")
        return repo

    def _repo_for_write(self, repo_type: str, repo_id: str) -> _Repo:
        self._require_write()
        repo = self.hub._repos.get((repo_type, repo_id))
        if repo is None:
            raise _not_found_repo()
        return repo

    # -------------------------------------------------------------------------------- routing

    def _route_hub(self, segs: list[str]) -> None:
        m = self.command
        hub = self.hub
        if segs[:1] == ["api"]:
            rest = segs[1:]
            if rest == ["whoami-v2"] and m == "GET":
                return self._whoami()
            if rest == ["repos", "create"] and m == "POST":
                return self._create_repo()
            if rest == ["repos", "delete"] and m == "DELETE":
                return self._delete_repo()
            if rest == ["validate-yaml"] and m == "POST":
                return self._validate_yaml()
            if len(rest) >= 3 and rest[0] in _TYPE_FROM_PLURAL:
                repo_type = _TYPE_FROM_PLURAL[rest[0]]
                repo_id = f"{rest[1]}/{rest[2]}"
                action, args = (rest[3], rest[4:]) if len(rest) > 3 else ("", [])
                with hub._lock:
                    return self._route_repo_api(m, repo_type, repo_id, action, args)
            raise _HubError(404, f"Sorry, we can't find the page you are looking for ({m} {self.path})")

        # git LFS: /{prefix}{org}/{name}.git/info/lfs/objects/{batch,verify}
        repo_type, rest = _split_type(segs)
        if (
            len(rest) >= 6
            and rest[1].endswith(".git")
            and rest[2:5] == ["info", "lfs", "objects"]
            and m == "POST"
        ):
            repo_id = f"{rest[0]}/{rest[1][: -len('.git')]}"
            with hub._lock:
                if rest[5] == "batch":
                    return self._lfs_batch(repo_type, repo_id)
                if rest[5] == "verify":
                    return self._lfs_verify(repo_type, repo_id)
        # /{prefix}{org}/{name}/resolve/{rev}/{path...}
        if len(rest) >= 5 and rest[2] == "resolve" and m in ("GET", "HEAD"):
            with hub._lock:
                return self._resolve_file(repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
        raise _HubError(404, f"Sorry, we can't find the page you are looking for ({m} {self.path})")

    def _route_repo_api(self, m: str, repo_type: str, repo_id: str, action: str, args: list[str]) -> None:
        if action == "" and m == "GET":
            return self._repo_info(repo_type, repo_id, None)
        if action == "revision" and m == "GET" and args:
            return self._repo_info(repo_type, repo_id, "/".join(args))
        if action == "tree" and m == "GET" and args:
            return self._tree(repo_type, repo_id, args[0], "/".join(args[1:]))
        if action == "paths-info" and m == "POST" and args:
            return self._paths_info(repo_type, repo_id, "/".join(args))
        if action == "refs" and m == "GET":
            return self._refs(repo_type, repo_id)
        if action == "commits" and m == "GET" and args:
            return self._commits(repo_type, repo_id, "/".join(args))
        if action == "preupload" and m == "POST" and args:
            return self._preupload(repo_type, repo_id, "/".join(args))
        if action == "commit" and m == "POST" and args:
            return self._commit(repo_type, repo_id, "/".join(args))
        if action == "branch" and args and m in ("POST", "DELETE"):
            return self._branch(repo_type, repo_id, "/".join(args))
        if action == "tag" and args and m in ("POST", "DELETE"):
            return self._tag(repo_type, repo_id, "/".join(args))
        raise _HubError(404, f"Sorry, we can't find the page you are looking for ({m} {self.path})")

    # -------------------------------------------------------------------------------- account / repos

    def _whoami(self) -> None:
        self._require_write()
        hub = self.hub
        self._send_json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": hub.user,
                "fullname": "Fake User",
                "email": f"{hub.user}@example.invalid",
                "emailVerified": True,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
            }
        )

    def _create_repo(self) -> None:
        self._require_write()
        p = self._json()
        name, org = p.get("name"), p.get("organization") or self.hub.user
        repo_type = p.get("type") or "model"
        if not name or repo_type not in REPO_TYPES:
            raise _HubError(400, "Invalid repo name or type")
        private = p.get("visibility") == "private" if "visibility" in p else bool(p.get("private"))
        repo_id = f"{org}/{name}"
        url = f"{self.hub.url}/{_URL_PREFIX[repo_type]}{repo_id}"
        with self.hub._lock:
            if (repo_type, repo_id) in self.hub._repos:
                raise _HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            self.hub._create_repo(repo_type, repo_id, private)
        self._send_json({"url": url, "name": repo_id, "id": hashlib.sha1(url.encode()).hexdigest()[:24]})

    def _delete_repo(self) -> None:
        self._require_write()
        p = self._json()
        repo_id = f"{p.get('organization') or self.hub.user}/{p.get('name')}"
        with self.hub._lock:
            if self.hub._repos.pop((p.get("type") or "model", repo_id), None) is None:
                raise _not_found_repo()
        self._send(200)

    def _validate_yaml(self) -> None:
        content = self._json().get("content", "")
        errors = []
        m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        if m:
            try:
                import yaml

                meta = yaml.safe_load(m.group(1))
                if meta is not None and not isinstance(meta, dict):
                    errors.append({"message": "YAML metadata must be a mapping"})
            except Exception as e:  # yaml.YAMLError
                errors.append({"message": f"Invalid YAML: {e}"})
        if errors:
            self._send_json({"errors": errors, "warnings": []}, 400)
        else:
            self._send_json({"errors": [], "warnings": []})

    def _repo_info(self, repo_type: str, repo_id: str, rev: str | None) -> None:
        hub = self.hub
        repo = self._repo_for_read(repo_type, repo_id)
        commit = hub._resolve(repo, rev or "main")
        blobs = self._qbool("blobs")
        siblings = []
        for p, e in sorted(commit.files.items()):
            s: dict[str, Any] = {"rfilename": p}
            if blobs:
                s.update(size=e.size, blobId=e.blob_id)
                if e.is_lfs:
                    s["lfs"] = {
                        "size": e.size,
                        "sha256": e.lfs_oid,
                        "pointerSize": len(lfs_pointer(e.lfs_oid, e.size)),
                    }
            siblings.append(s)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.prefix.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created),
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        card = _card_data(commit.files.get("README.md"), repo, hub)
        if card is not None:
            info["cardData"] = card
        if repo_type == "model":
            info["modelId"] = repo_id
        self._send_json(info)

    # -------------------------------------------------------------------------------- listing

    def _entry_json(self, repo: _Repo, commit: _Commit, path: str, expand: bool) -> dict[str, Any] | None:
        files = commit.files
        if path in files:
            e = files[path]
            d: dict[str, Any] = {"type": "file", "oid": e.blob_id, "size": e.size, "path": path}
            if e.is_lfs:
                d["lfs"] = {
                    "oid": e.lfs_oid,
                    "size": e.size,
                    "pointerSize": len(lfs_pointer(e.lfs_oid, e.size)),
                }
        else:
            prefix = path.rstrip("/") + "/" if path else ""
            children = sorted((p, f.blob_id) for p, f in files.items() if p.startswith(prefix))
            if not children:
                return None
            oid = hashlib.sha1(repr(children).encode()).hexdigest()
            d = {"type": "directory", "oid": oid, "size": 0, "path": path}
        if expand:
            last = _last_change(repo, commit, path)
            d["lastCommit"] = {"id": last.sha, "title": last.title, "date": _iso(last.date)}
            if d["type"] == "file":
                d["securityFileStatus"] = {"status": "safe", "avScan": None, "pickleImportScan": None}
        return d

    def _tree(self, repo_type: str, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo_for_read(repo_type, repo_id)
        commit = self.hub._resolve(repo, rev)
        path = path.strip("/")
        recursive, expand = self._qbool("recursive"), self._qbool("expand")
        if path in commit.files:
            raise _HubError(404, f"{path} is a file, not a folder", "EntryNotFound")
        prefix = path + "/" if path else ""
        below = [p for p in commit.files if p.startswith(prefix)]
        if path and not below:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound")
        names: set[str] = set()
        for p in below:
            parts = p[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, depth + 1):
                names.add(prefix + "/".join(parts[:i]))
        entries = [self._entry_json(repo, commit, n, expand) for n in sorted(names)]
        self._send_json([e for e in entries if e is not None])

    def _paths_info(self, repo_type: str, repo_id: str, rev: str) -> None:
        repo = self._repo_for_read(repo_type, repo_id)
        commit = self.hub._resolve(repo, rev)
        ctype = (self.headers.get("Content-Type") or "").lower()
        if "json" in ctype:
            p = self._json()
            paths, expand = p.get("paths") or [], p.get("expand") in (True, "true", "1", 1)
        else:
            form = parse_qs(self.body.decode(), keep_blank_values=True)
            paths = form.get("paths", []) + form.get("paths[]", [])
            expand = (form.get("expand") or ["false"])[-1].lower() in ("1", "true")
        if isinstance(paths, str):
            paths = [paths]
        out = []
        for path in paths:
            e = self._entry_json(repo, commit, path.strip("/"), expand)
            if e is not None:
                out.append(e)
        self._send_json(out)

    def _refs(self, repo_type: str, repo_id: str) -> None:
        repo = self._repo_for_read(repo_type, repo_id)
        out: dict[str, Any] = {
            "branches": [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                for n, s in sorted(repo.branches.items())
            ],
            "converts": [],
            "tags": [
                {"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in sorted(repo.tags.items())
            ],
        }
        if self._q("include_prs"):
            out["pullRequests"] = []
        self._send_json(out)

    def _commits(self, repo_type: str, repo_id: str, rev: str) -> None:
        repo = self._repo_for_read(repo_type, repo_id)
        c: _Commit | None = self.hub._resolve(repo, rev)
        out = []
        while c is not None:
            item = {
                "id": c.sha,
                "title": c.title,
                "message": c.message,
                "authors": [{"user": self.hub.user, "avatar": None}],
                "date": _iso(c.date),
            }
            if self.query.get("expand[]"):
                item.update(formattedTitle=c.title, formattedMessage=c.message)
            out.append(item)
            c = repo.commits.get(c.parent) if c.parent else None
        self._send_json(out)

    def _branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        repo = self._repo_for_write(repo_type, repo_id)
        if self.command == "DELETE":
            if branch == "main" or branch not in repo.branches:
                raise _HubError(400 if branch == "main" else 404, f"Cannot delete branch {branch}")
            del repo.branches[branch]
            return self._send(200)
        if branch in repo.branches:
            raise _HubError(409, f"Branch {branch} already exists")
        start = self._json().get("startingPoint") if self.body else None
        repo.branches[branch] = self.hub._resolve(repo, start or "main").sha
        self._send(200)

    def _tag(self, repo_type: str, repo_id: str, rev: str) -> None:
        repo = self._repo_for_write(repo_type, repo_id)
        if self.command == "DELETE":
            if repo.tags.pop(rev, None) is None:
                raise _HubError(404, f"Tag {rev} not found", "RevisionNotFound")
            return self._send(200)
        tag = self._json().get("tag")
        if not tag:
            raise _HubError(400, "Missing tag name")
        if tag in repo.tags:
            raise _HubError(409, f"Tag {tag} already exists")
        repo.tags[tag] = self.hub._resolve(repo, rev).sha
        self._send(200)

    # -------------------------------------------------------------------------------- upload

    def _preupload(self, repo_type: str, repo_id: str, rev: str) -> None:
        hub = self.hub
        repo = self._repo_for_write(repo_type, repo_id)
        commit = hub._resolve(repo, rev)
        out = []
        for f in self._json().get("files", []):
            path, size = f["path"], int(f["size"])
            sample = base64.b64decode(f.get("sample") or "")
            lfs = size >= hub.lfs_threshold or path.lower().endswith(LFS_EXTENSIONS) or (b"\0" in sample)
            item: dict[str, Any] = {
                "path": path,
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": False,
            }
            existing = commit.files.get(path)
            if existing is not None:
                item["oid"] = existing.lfs_oid if existing.is_lfs else existing.blob_id
            out.append(item)
        self._send_json({"files": out, "commitOid": commit.sha})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        hub = self.hub
        repo = self._repo_for_write(repo_type, repo_id)
        p = self._json()
        if p.get("operation") not in ("upload", "download"):
            raise _HubError(422, "Invalid operation")
        objects = []
        for o in p.get("objects", []):
            oid, size = o.get("oid"), o.get("size")
            if not (isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid) and isinstance(size, int)):
                objects.append(
                    {
                        "oid": str(oid),
                        "size": int(size or 0),
                        "error": {"code": 422, "message": "Invalid object"},
                    }
                )
                continue
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if p["operation"] == "download":
                if oid in repo.lfs:
                    item["actions"] = {"download": {"href": self._cdn_href(repo, oid)}}
                else:
                    item["error"] = {"code": 404, "message": "Object does not exist"}
            elif oid not in repo.lfs:
                sig = hub._sign("put", repo.repo_type, repo.repo_id, oid, str(size))
                item["actions"] = {
                    "upload": {
                        "href": f"{hub.cdn_url}/lfs-upload/{repo.repo_type}/{repo.repo_id}/{oid}?size={size}&sig={sig}",
                        "header": {},
                    },
                    "verify": {"href": f"{hub.url}/{repo.prefix}.git/info/lfs/objects/verify", "header": {}},
                }
            objects.append(item)
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode(),
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_verify(self, repo_type: str, repo_id: str) -> None:
        repo = self._repo_for_write(repo_type, repo_id)
        p = self._json()
        data = repo.lfs.get(p.get("oid", ""))
        if data is None or len(data) != p.get("size"):
            raise _HubError(404, "Object not found or size mismatch")
        self._send_json({"success": True})

    def _commit(self, repo_type: str, repo_id: str, rev: str) -> None:
        hub = self.hub
        repo = self._repo_for_write(repo_type, repo_id)
        branch = unquote(rev).removeprefix("refs/heads/")
        if self._qbool("create_pr"):
            raise _HubError(400, "Pull requests are not supported by the fake hub")
        if branch not in repo.branches:
            if re.fullmatch(r"[0-9a-f]{40}", branch) or branch in repo.tags:
                raise _HubError(400, f"Cannot commit to {branch}: not a branch")
            raise _HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        lines = [ln for ln in self.body.splitlines() if ln.strip()]
        if (
            "ndjson" not in (self.headers.get("Content-Type") or "")
            and lines
            and lines[0].lstrip().startswith(b'{"summary')
        ):
            raise _HubError(400, "Only the NDJSON commit payload is supported by the fake hub")
        try:
            items = [json.loads(ln) for ln in lines]
        except ValueError as e:
            raise _HubError(400, f"Invalid NDJSON payload: {e}") from None
        if not items or items[0].get("key") != "header":
            raise _HubError(400, "The first line of the payload must be the header")
        header = items[0].get("value") or {}
        head = repo.commits[repo.branches[branch]]
        parent_commit = header.get("parentCommit")
        if parent_commit is not None and not head.sha.startswith(parent_commit):
            raise _HubError(412, "A commit has happened since. Please refresh and try again.")
        title = header.get("summary") or ""
        if not title:
            raise _HubError(400, "Commit summary is required")
        files = dict(head.files)
        for it in items[1:]:
            key, v = it.get("key"), it.get("value") or {}
            path = str(v.get("path", "")).strip("/")
            if key in ("file", "lfsFile") and (not path or ".." in path.split("/")):
                raise _HubError(400, f"Invalid path: {path!r}")
            if key == "file":
                if v.get("encoding", "base64") != "base64":
                    raise _HubError(400, "Only base64 encoding is supported")
                data = base64.b64decode(v.get("content", ""))
                files[path] = _Entry(len(data), data=data)
            elif key == "lfsFile":
                oid = v.get("oid")
                if v.get("algo", "sha256") != "sha256" or oid not in repo.lfs:
                    raise _HubError(422, f"LFS object {oid} for {path} has not been uploaded")
                size = len(repo.lfs[oid])
                if v.get("size") is not None and int(v["size"]) != size:
                    raise _HubError(422, f"LFS object {oid}: size mismatch")
                files[path] = _Entry(size, lfs_oid=oid)
            elif key == "deletedFile":
                if path not in files:
                    raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                below = [p for p in files if p.startswith(path + "/")] if path else list(files)
                if not below:
                    raise _HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in below:
                    del files[p]
            else:
                raise _HubError(400, f"Unsupported commit operation: {key!r}")
        for p in files:  # a path cannot be both a file and a folder
            parts = p.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in files:
                    raise _HubError(409, f"Path conflict: {'/'.join(parts[:i])} is a file")
        c = hub._make_commit(repo, head.sha, files, title, header.get("description") or "")
        repo.branches[branch] = c.sha
        self._send_json(
            {
                "success": True,
                "commitOid": c.sha,
                "commitUrl": f"{hub.url}/{repo.prefix}/commit/{c.sha}",
                "pullRequestUrl": None,
                "hookOutput": "",
            }
        )

    # -------------------------------------------------------------------------------- download

    def _cdn_href(self, repo: _Repo, oid: str) -> str:
        sig = self.hub._sign("get", repo.repo_type, repo.repo_id, oid)
        return f"{self.hub.cdn_url}/lfs/{repo.repo_type}/{repo.repo_id}/{oid}?sig={sig}"

    def _resolve_file(self, repo_type: str, repo_id: str, rev: str, path: str) -> None:
        hub = self.hub
        repo = self._repo_for_read(repo_type, repo_id)
        commit = hub._resolve(repo, rev)
        e = commit.files.get(path)
        base = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if e is None:
            raise _HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.sha})
        if e.is_lfs:
            headers = {
                **base,
                "ETag": f'"{e.blob_id}"',
                "X-Linked-Etag": f'"{e.lfs_oid}"',
                "X-Linked-Size": str(e.size),
            }
            if hub.lfs_redirect:
                headers["Location"] = self._cdn_href(repo, e.lfs_oid)
                return self._send(302, b"", headers)
            return self._send_content(repo.lfs[e.lfs_oid], headers)
        return self._send_content(e.data or b"", {**base, "ETag": f'"{e.blob_id}"'})

    def _send_content(self, data: bytes, headers: dict) -> None:
        headers = {**headers, "Accept-Ranges": "bytes"}
        rng = self.headers.get("Range")
        if rng:
            span = _parse_range(rng, len(data))
            if span == "unsatisfiable":
                return self._send(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
            if span is not None:
                start, end = span
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return self._send(206, data[start : end + 1], headers, "application/octet-stream")
        self._send(200, data, headers, "application/octet-stream")

    # -------------------------------------------------------------------------------- cdn

    def _route_cdn(self, segs: list[str]) -> None:
        hub = self.hub
        m = self.command
        # /lfs/{type}/{org}/{name}/{oid}?sig=  and  /lfs-upload/{type}/{org}/{name}/{oid}?size=&sig=
        if len(segs) == 5 and segs[0] in ("lfs", "lfs-upload") and segs[1] in REPO_TYPES:
            repo_type, repo_id, oid = segs[1], f"{segs[2]}/{segs[3]}", segs[4]
            with hub._lock:
                repo = hub._repos.get((repo_type, repo_id))
            if repo is None:
                raise _HubError(404, "Not found")
            if segs[0] == "lfs" and m in ("GET", "HEAD"):
                if self._q("sig") != hub._sign("get", repo_type, repo_id, oid) or oid not in repo.lfs:
                    raise _HubError(403, "Access denied")
                return self._send_content(repo.lfs[oid], {"ETag": f'"{oid}"'})
            if segs[0] == "lfs-upload" and m == "PUT":
                size = self._q("size") or ""
                if self._q("sig") != hub._sign("put", repo_type, repo_id, oid, size):
                    raise _HubError(403, "Access denied")
                if len(self.body) != int(size):
                    raise _HubError(400, f"Size mismatch: expected {size}, got {len(self.body)}")
                if hashlib.sha256(self.body).hexdigest() != oid:
                    raise _HubError(400, "sha256 mismatch")
                with hub._lock:
                    repo.lfs[oid] = self.body
                return self._send(200, b"", {"ETag": f'"{hashlib.md5(self.body).hexdigest()}"'})
        raise _HubError(404, "Not found")


# --------------------------------------------------------------------------------------------- helpers


def _split_type(segs: list[str]) -> tuple[str, list[str]]:
    if segs and segs[0] in _TYPE_FROM_PLURAL and segs[0] != "models":
        return _TYPE_FROM_PLURAL[segs[0]], segs[1:]
    return "model", segs


def _parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """(start, end) inclusive, "unsatisfiable", or None to ignore the header (multi-range, garbage)."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # suffix: last N bytes
        n = int(m.group(2))
        if n == 0:
            return "unsatisfiable"
        return max(size - n, 0), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _last_change(repo: _Repo, commit: _Commit, path: str) -> _Commit:
    """The most recent ancestor of ``commit`` (itself included) that changed ``path`` (file or folder)."""

    def sig(c: _Commit):
        if path in c.files:
            return c.files[path].blob_id
        prefix = path + "/" if path else ""
        return tuple(sorted((p, e.blob_id) for p, e in c.files.items() if p.startswith(prefix)))

    current, s = commit, sig(commit)
    while current.parent is not None:
        parent = repo.commits[current.parent]
        if sig(parent) != s:
            return current
        current = parent
    return current


def _card_data(entry: _Entry | None, repo: _Repo, hub: HubServer) -> dict | None:
    if entry is None:
        return None
    text = hub._content(repo, entry).decode("utf-8", "replace")
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not m:
        return None
    try:
        import yaml

        data = yaml.safe_load(m.group(1))
    except Exception:
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------- env


def hub_env(monkeypatch, hub: HubServer, tmp_path: Path | str) -> dict[str, str]:
    """Point ``huggingface_hub`` and ``datasets`` at ``hub`` for one test (``monkeypatch`` undoes it all).

    Sets the environment (``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HOME``, ``HF_DATASETS_CACHE``,
    ``HF_HUB_DISABLE_XET=1``, offline flags off, telemetry off) for code that imports the libraries later,
    and patches the module constants the libraries computed from it at import time for code that
    already imported them. Returns the environment it set.
    """
    tmp = Path(tmp_path)
    home = tmp / "hf-home"
    ds_cache = tmp / "hf-datasets-cache"
    home.mkdir(parents=True, exist_ok=True)
    ds_cache.mkdir(parents=True, exist_ok=True)
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": hub.token,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_DATASETS_CACHE": str(ds_cache),
        "HF_MODULES_CACHE": str(home / "modules"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
        "HF_HUB_ETAG_TIMEOUT": "30",
        "HF_HUB_DOWNLOAD_TIMEOUT": "30",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in (
        "HUGGING_FACE_HUB_TOKEN",
        "HF_OIDC_RESOURCE",
        "HF_OIDC_ID_TOKEN",
        "HUGGINGFACE_CO_STAGING",
        "HF_TOKEN_PATH",
        "HF_STORED_TOKENS_PATH",
        "HUGGINGFACE_HUB_CACHE",
        "HF_DATASETS_DOWNLOADED_DATASETS_PATH",
        "HF_DATASETS_EXTRACTED_DATASETS_PATH",
    ):
        monkeypatch.delenv(k, raising=False)

    import sys

    def set_(obj, name, value):
        monkeypatch.setattr(obj, name, value, raising=False)

    if "huggingface_hub" in sys.modules:
        from huggingface_hub import constants as c

        set_(c, "ENDPOINT", hub.url)
        set_(c, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        set_(c, "HF_URL_HOSTS", frozenset(c.HF_URL_HOSTS | {"127.0.0.1"}))
        set_(c, "HF_HUB_OFFLINE", False)
        set_(c, "HF_HUB_DISABLE_XET", True)
        set_(c, "HF_HUB_DISABLE_TELEMETRY", True)
        set_(c, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
        set_(c, "HF_HOME", str(home))
        set_(c, "HF_HUB_CACHE", str(home / "hub"))
        set_(c, "HUGGINGFACE_HUB_CACHE", str(home / "hub"))
        set_(c, "HF_XET_CACHE", str(home / "xet"))
        set_(c, "HF_ASSETS_CACHE", str(home / "assets"))
        set_(c, "HF_TOKEN_PATH", str(home / "token"))
        set_(c, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        set_(c, "HF_HUB_ETAG_TIMEOUT", 30)
        set_(c, "HF_HUB_DOWNLOAD_TIMEOUT", 30)
        for mod_name, attr, value in (
            ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", str(home / "hub")),
            ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", str(home / "assets")),
        ):
            mod = sys.modules.get(mod_name)
            if mod is not None and hasattr(mod, attr):
                set_(mod, attr, value)
        http = sys.modules.get("huggingface_hub.utils._http")
        if http is not None and hasattr(http, "_HUB_ORIGINS") and hasattr(http, "_url_origin"):
            origins = {
                http._url_origin(u)
                for u in (c._HF_DEFAULT_ENDPOINT, c._HF_DEFAULT_STAGING_ENDPOINT, "https://hf.co", hub.url)
            }
            set_(http, "_HUB_ORIGINS", frozenset(origins))
        from huggingface_hub import HfFileSystem

        # fresh fsspec instance cache (the old one comes back when monkeypatch undoes this)
        set_(HfFileSystem, "_cache", {})

    if "datasets" in sys.modules:
        from datasets import config as dc

        set_(dc, "HF_ENDPOINT", hub.url)
        set_(dc, "HUB_DATASETS_URL", hub.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
        set_(dc, "HF_HUB_OFFLINE", False)
        set_(dc, "HF_DATASETS_OFFLINE", False)
        set_(dc, "HF_UPDATE_DOWNLOAD_COUNTS", False)
        set_(dc, "USE_PARQUET_EXPORT", False)  # the dataset viewer (datasets-server) is another host
        set_(dc, "HF_CACHE_HOME", str(home))
        set_(dc, "HF_DATASETS_CACHE", ds_cache)
        set_(dc, "HF_MODULES_CACHE", home / "modules")
        set_(dc, "DOWNLOADED_DATASETS_PATH", ds_cache / dc.DOWNLOADED_DATASETS_DIR)
        set_(dc, "EXTRACTED_DATASETS_PATH", ds_cache / dc.DOWNLOADED_DATASETS_DIR / dc.EXTRACTED_DATASETS_DIR)
    return {**env, "HF_HOME": os.fspath(home)}
