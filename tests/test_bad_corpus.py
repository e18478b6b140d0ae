"""The bad-input corpus (tests/bad_corpus.py, issue 7): every broken input stops ``als-datasets
build`` with ONE line ``error: <file>: <reason>`` on stderr, exit code 2, no traceback — or ends
in its documented clean outcome — and a failed build never damages an earlier complete one.

Cases the library does not handle yet are strict xfails whose reason says what happens now.
"""

from __future__ import annotations

import errno
import json

import pytest
from bad_corpus import CASE_NAMES, make_corpus

from als_datasets.cli import main

#: case name -> what happens now (strict xfail until the library handles it); empty = all handled
XFAIL: dict[str, str] = {}


def _param(name):
    if name in XFAIL:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=XFAIL[name]), id=name)
    return pytest.param(name, id=name)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return {c.name: c for c in make_corpus(tmp_path_factory.mktemp("bad-corpus"))}


def _build(recipe, capsys, *extra, timeout=120):
    """``main(["build", recipe, "-q", ...])`` in a watchdog thread: (exit code, stderr).  A build
    that hangs fails the test instead of the whole run (the stuck daemon thread is left behind)."""
    import threading

    result = {}

    def target():
        try:
            main(["build", str(recipe), "-q", *extra])
            result["code"] = 0
        except SystemExit as e:
            result["code"] = e.code
        except BaseException as e:  # noqa: BLE001 - reported below
            result["code"] = f"raised {type(e).__name__}: {e}"

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"the build hung (no exit after {timeout} s)")
    return result["code"], capsys.readouterr().err.strip()


def _assert_one_line_error(code, err, expect):
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    assert code == 2, (code, err)
    # the file name anywhere in the line; the reason keywords after the path (case folders are
    # named after their case, so a keyword could otherwise match the path)
    assert expect[0] in err, f"{expect[0]!r} not in {err!r}"
    reason = err[len("error: "):].split(": ", 1)[-1]
    for s in expect[1:]:
        assert s in reason, f"{s!r} not in the reason {reason!r}"


def test_corpus_size_and_names(corpus):
    assert len(corpus) >= 25
    kinds = {n.split("_")[0] for n in corpus}
    assert {"recipe", "boundary", "landcover", "dem"} <= kinds


@pytest.mark.parametrize("name", [_param(n) for n in CASE_NAMES])
def test_bad_input(corpus, capsys, name):
    if name not in corpus:
        pytest.skip(f"{name}: its source file is not available")
    case = corpus[name]
    code, err = _build(case.recipe_path, capsys)
    if case.outcome == "error":
        _assert_one_line_error(code, err, case.expect_substrings)
        return
    # documented clean outcomes: nothing on stderr, a finished build
    assert code == 0 and err == "", (code, err)
    out = case.recipe_path.parent / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    if case.outcome == "ok":
        assert sum(manifest["splits"].values()) > 0 and not manifest["skipped_tiles"]
    else:  # "skipped": every selected tile recorded with a reason, no sample written
        assert sum(manifest["splits"].values()) == 0
        assert manifest["skipped_tiles"] and all(t["reason"] for t in manifest["skipped_tiles"])
        from als_datasets.dataset.layout import validate

        assert "manifest.json: no samples (the build wrote no shard that holds one)" in validate(out)  # never pushed
    assert not (out / ".build").exists()


# ------------------------------------------------------------------------------ disk full
# The CLI runs in-process so that the shard writers' ``open`` can be patched (in their module
# only) to fail with ENOSPC, at file creation or at the first write, for the WebDataset tar
# (".shard-" temp files, the first writer of the lockstep) or the Parquet part (".part-").


def _snapshot(out):
    return {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and ".build" not in p.parts}


class _FullDisk:
    """A file whose writes fail with ENOSPC (the disk filled up while a shard was written)."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", self._f.name)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _disk_full_build(corpus, capsys, monkeypatch, which: str, at: str, name: str, timeout=30):
    """A complete build, then a different one (3 samples instead of 2, ``--overwrite``) into the same folder whose
    ``which`` temp files fail with ENOSPC ``at`` "create" or "write".  (before, after, code, err)."""
    import builtins

    from als_datasets.shards import writer

    recipe = corpus["boundary_bowtie"].recipe_path  # any good recipe; its own output folder
    out = recipe.parent / name
    code, err = _build(recipe, capsys, "--out", str(out))
    assert code == 0, err
    before = _snapshot(out)
    real_open = builtins.open

    def full_open(file, mode="r", *a, **kw):
        hit = "x" in mode and which in str(file)
        if hit and at == "create":
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        f = real_open(file, mode, *a, **kw)
        return _FullDisk(f) if hit else f

    monkeypatch.setattr(writer, "open", full_open, raising=False)  # the writers' module only
    code, err = _build(recipe, capsys, "--out", str(out), "-n", "3", "--overwrite", timeout=timeout)
    monkeypatch.undo()
    return before, _snapshot(out), code, err


@pytest.mark.parametrize("which,at", [(".part-", "write"), (".part-", "create"), (".shard-", "create")])
def test_disk_full_keeps_previous_build(corpus, capsys, monkeypatch, which, at):
    name = f"out_full{which.strip('.-')}_{at}"
    before, after, code, err = _disk_full_build(corpus, capsys, monkeypatch, which, at, name)
    _assert_one_line_error(code, err, (name, "No space left on device"))
    assert after == before
    assert not [p for p in after if ".tmp-" in p.name]


def test_disk_full_tar_write_does_not_hang(corpus, capsys, monkeypatch):
    name = "out_full_shard_write"
    before, after, code, err = _disk_full_build(corpus, capsys, monkeypatch, ".shard-", "write", name, timeout=15)
    _assert_one_line_error(code, err, (name, "No space left on device"))
    assert after == before
