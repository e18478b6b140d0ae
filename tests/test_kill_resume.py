"""Kill anywhere (DESIGN.md §10, issue 7): SIGKILL a real ``als-datasets build`` at a random
moment, run the same command again, and require the folder to end byte-identical to an
uninterrupted build, with no sample lost or duplicated, no leftovers, and ``validate`` passing.

The kill moments are drawn from each trial's seed inside a phase of the build (sampling frame,
reading point clouds, writing shards, finalising, and "late": the last files, the removal of
``.build`` and the interpreter's exit).  A phase's window is measured once on an uninterrupted
build with the same number of workers; a trial waits for that phase to start in its own run (a
file the build writes there) and kills the whole process group a seeded fraction of the
window later, so the phases are hit on slow and fast machines alike.  Some seeds kill the
resumed run again (at a seeded moment of the whole build's duration) before the final resume.

Reproduce one trial: ``pytest tests/test_kill_resume.py -k 'trial and SEED'`` (``-m slow`` for
seeds past the default ones); ``-rP`` prints each trial's kill log.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from synth_inputs import DATA, landcover_around, shifted_copy, write_recipe
from typer.testing import CliRunner

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs process groups and SIGKILL")

MVK = DATA / "als" / "mvk-thin.las"
COPIES = ("a", "b", "c")
#: phase -> the file whose appearance starts it (the build's own progress, DESIGN.md §4)
PHASES = {
    "frame": "",                             # out/ exists: the sampling frame is being computed
    "reading": ".build/staging/_plan.json",  # staging reset: route tasks run
    "shards": ".build/shards",               # all files routed: shard tasks run
    "finalise": "index.parquet",             # shards written: metadata, report, card
    "late": "README.md",                     # croissant, removal of .build, exit
}
PHASE_NAMES = tuple(PHASES)
#: the phase of each seed's first kill, in turn (the default seeds hit reading with 1 and 2 workers)
KILL_ORDER = ("reading", "shards", "finalise", "late", "frame")
DEFAULT_SEEDS = range(6)
SLOW_SEEDS = range(6, 30)
RUN_TIMEOUT_S = 300


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------
def _build_cmd(recipe: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "als_datasets", "build", str(recipe), "--out", str(out), "-q",
            "--workers", str(workers)]


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is left in the process group (Linux /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in "ZX":
            return True
    return False


def _kill_group(p: subprocess.Popen) -> None:
    """SIGKILL the build and every process it started (pool workers, fork server), and wait
    until none of them can still touch the folder."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()
    deadline = time.monotonic() + 20
    while _group_alive(p.pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, start_new_session=True, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def _events(out: Path) -> dict[str, bool]:
    return {ph: (out / marker).exists() for ph, marker in PHASES.items()}


def _run_measured(cmd: list[str], out: Path, log: Path) -> dict[str, float]:
    """Run to completion; when each phase started and when the process ended (s after start)."""
    t0 = time.monotonic()
    p = _start(cmd, log)
    seen: dict[str, float] = {}
    try:
        while p.poll() is None:
            now = time.monotonic() - t0
            for ph, there in _events(out).items():
                if there and ph not in seen:
                    seen[ph] = now
            if time.monotonic() - t0 > RUN_TIMEOUT_S:
                raise AssertionError(f"build did not finish in {RUN_TIMEOUT_S} s: {cmd}")
            time.sleep(0.004)
    finally:
        if p.returncode is None:
            _kill_group(p)
    seen["exit"] = time.monotonic() - t0
    assert p.returncode == 0, f"{cmd} failed:\n{log.read_text()}"
    return seen


def _run_to_end(cmd: list[str], log: Path) -> None:
    p = _start(cmd, log)
    try:
        rc = p.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if p.returncode is None:
            _kill_group(p)
    assert rc == 0, f"{cmd} failed (rc {rc}):\n{log.read_text()}"


def _run_and_kill(cmd: list[str], out: Path, log: Path, anchor: str | None, delay: float) -> tuple[str, float]:
    """Start the build; SIGKILL its process group ``delay`` s after phase ``anchor`` started
    (after the start itself when ``anchor`` is None).  Returns (state of the folder when it
    died, seconds since start); the state is "exited" when the build ended first."""
    t0 = time.monotonic()
    p = _start(cmd, log)
    at = t0 + delay if anchor is None else None
    try:
        while p.poll() is None:
            now = time.monotonic()
            if at is None and (out / PHASES[anchor]).exists():
                at = now + delay
            if at is not None and now >= at:
                break
            if now - t0 > RUN_TIMEOUT_S:
                raise AssertionError(f"build did not finish in {RUN_TIMEOUT_S} s: {cmd}")
            time.sleep(0.002)
    finally:
        exited = p.poll() is not None
        _kill_group(p)
    t = time.monotonic() - t0
    if exited:
        assert p.returncode == 0, f"{cmd} failed (rc {p.returncode}):\n{log.read_text()}"
        return "exited", t
    return _state(out), t


def _state(out: Path) -> str:
    """What the folder says about where a (first) build was when it died."""
    if not out.is_dir():
        return "startup"
    work = out / ".build"
    if not work.exists():
        return "late: complete, before exit" if (out / "manifest.json").is_file() else "frame"
    if (out / "index.parquet").is_file():
        done = [f for f in ("manifest.json", "report/diversity.json", "README.md", "croissant.json")
                if (out / f).is_file()]
        return f"finalise: {', '.join(done) or 'index.parquet'} written"
    if (work / "shards").is_dir():
        tars = len(list(out.glob("webdataset/*/*.tar")))
        sides = len(list((work / "shards").glob("*.json")))
        tmp = len([p for p in out.rglob(".*.tmp-*") if ".build" not in p.parts])
        return f"shards: {tars} tars, {sides} done, {tmp} temp files"
    if (work / "staging" / "_plan.json").is_file():
        routed = len(list((work / "staging" / "_done").glob("*.json")))
        return f"reading: {routed}/{len(COPIES)} files routed"
    return "frame"


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------
def _digest(out: Path) -> dict[str, str]:
    """sha256 of every file; recipe.yaml records the output folder, so it is hashed with that
    folder replaced by a placeholder."""
    d = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "recipe.yaml" and p.parent == out:
                data = data.replace(str(out).encode(), b"<OUT>")
            d[p.relative_to(out).as_posix()] = hashlib.sha256(data).hexdigest()
    return d


def _keys(out: Path) -> dict[str, list[str]]:
    """Sample keys in shard order: per format, and in index.parquet."""
    import pandas as pd
    import pyarrow.parquet as pq

    tar_keys = []
    for t in sorted(out.glob("webdataset/*/*.tar")):
        with tarfile.open(t) as tar:
            tar_keys += [m.name[: -len(".json")] for m in tar if m.name.endswith(".json")]
    pq_keys = [k for p in sorted(out.glob("parquet/*/*.parquet"))
               for k in pq.read_table(p, columns=["__key__"]).column("__key__").to_pylist()]
    return {"webdataset": tar_keys, "parquet": pq_keys,
            "index": pd.read_parquet(out / "index.parquet", columns=["key"])["key"].tolist()}


def _validate_ok(out: Path) -> None:
    from als_datasets.cli import app

    r = CliRunner().invoke(app, ["validate", str(out)])
    assert r.exit_code == 0, r.output


def _check_like_reference(out: Path, ref: dict, what: str) -> None:
    left = [p for p in out.rglob("*") if p.name == ".build" or ".tmp-" in p.name]
    assert left == [], f"{what}: leftovers {left}"
    keys = _keys(out)
    for fmt, ks in keys.items():
        assert len(ks) == len(set(ks)), f"{what}: duplicated samples in {fmt}: {ks}"
        assert ks == ref["keys"][fmt], f"{what}: {fmt} keys {ks} != reference {ref['keys'][fmt]}"
    assert set(keys["webdataset"]) == set(keys["parquet"]) == set(keys["index"])
    got = _digest(out)
    diff = sorted(k for k in set(got) | set(ref["digest"]) if got.get(k) != ref["digest"].get(k))
    assert not diff, f"{what}: files differ from the uninterrupted build: {diff}"
    _validate_ok(out)


# --------------------------------------------------------------------------------------------
# fixtures: inputs, reference build, phase timelines
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill_resume")
    src = root / "in"
    src.mkdir()
    # several files → several route tasks; the same tiles → several parts per tile (each file's
    # points a metre higher than the last: identical copies would be refused as the same data)
    for k, c in enumerate(COPIES):
        shifted_copy(MVK, src / f"{c}.las", dz=float(k))
    from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud

    landcover_around(src / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds,
                     pattern=lambda h, w: 41 + (np.indices((h, w))[1] < w // 3) * -19)
    recipe = write_recipe(src / "r.yaml", name="kr", tile_size_m=500, grid_res_m=25, samples_per_project=9,
                          landcover={"path": "lc.tif"},
                          projects=[{"name": "kr", "pointclouds": [str(src / f"{c}.las") for c in COPIES]}],
                          output={"dir": "out", "shard_max_samples": 2})
    return root, recipe


@pytest.fixture(scope="module")
def reference(inputs):
    """An uninterrupted build per worker count (timed phase by phase); the 1-worker one is the
    reference every trial must equal, and the 2-worker one must equal it too."""
    root, recipe = inputs
    timelines: dict[int, dict[str, float]] = {}
    ref: dict = {}

    def timeline(workers: int) -> dict[str, float]:
        if workers not in timelines:
            out = root / f"ref-w{workers}" / "out"
            out.parent.mkdir()
            timelines[workers] = _run_measured(_build_cmd(recipe, out, workers), out, out.parent / "log")
            missing = [ph for ph in PHASE_NAMES if ph not in timelines[workers]]
            assert not missing, f"phases never seen: {missing} ({timelines[workers]})"
            if not ref:
                keys = _keys(out)
                assert len(keys["index"]) == 9 and len(list(out.glob("webdataset/*/*.tar"))) >= 4
                ref.update(digest=_digest(out), keys=keys, out=out)
                _validate_ok(out)
            else:
                _check_like_reference(out, ref, f"uninterrupted build, {workers} workers")
        return timelines[workers]

    timeline(1)
    return ref, timeline


def _window(tl: dict[str, float], phase: str) -> float:
    """How long ``phase`` lasted in the uninterrupted build."""
    order = [*PHASE_NAMES, "exit"]
    return max(0.0, tl[order[order.index(phase) + 1]] - tl[phase])


def trial_plan(seed: int) -> tuple[int, list[tuple[str | None, float]]]:
    """(workers, kills): the first kill is in phase ``KILL_ORDER[seed % 5]`` at a seeded
    fraction of its window; seeds ≡ 3 (mod 4) kill the resumed run once more, seeds ≡ 7 (mod 8)
    twice, at a seeded fraction of the whole build.  Fractions, not seconds: scaled per run."""
    rng = random.Random(f"kill-resume-{seed}")
    workers = 1 + seed % 2
    kills: list[tuple[str | None, float]] = [(KILL_ORDER[seed % len(KILL_ORDER)], rng.random())]
    for _ in range((seed % 4 == 3) + (seed % 8 == 7)):
        kills.append((None, rng.random()))
    return workers, kills


def _trial(seed: int, inputs, reference) -> None:
    root, recipe = inputs
    ref, timeline = reference
    workers, kills = trial_plan(seed)
    tl = timeline(workers)
    out = root / f"t{seed:03d}" / "out"
    out.parent.mkdir()
    log = out.parent / "log"
    cmd = _build_cmd(recipe, out, workers)
    history = []
    for i, (phase, frac) in enumerate(kills):
        delay = frac * (_window(tl, phase) if phase else tl["exit"])
        state, t = _run_and_kill(cmd, out, log, phase, delay)
        if phase:  # the folder tells where a first run died; a resumed one starts from old files
            history.append(f"kill {i + 1} in {phase} +{delay:.3f}s (t={t:.2f}s of {tl['exit']:.2f}s) -> {state}")
        else:
            history.append(f"kill {i + 1} of the resumed run at t={t:.2f}s of {tl['exit']:.2f}s"
                           + (" -> it had exited" if state == "exited" else ""))
    _run_to_end(cmd, log)
    what = f"seed {seed}, {workers} worker(s): " + "; ".join(history)
    print(what)
    _check_like_reference(out, ref, what)
    shutil.rmtree(out.parent)


@pytest.mark.parametrize("seed", DEFAULT_SEEDS)
def test_kill_and_resume_trial(seed, inputs, reference):
    _trial(seed, inputs, reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_kill_and_resume_trial_slow(seed, inputs, reference):
    _trial(seed, inputs, reference)


def test_trial_plan_covers_every_phase_and_both_worker_counts():
    plans = [trial_plan(s) for s in DEFAULT_SEEDS]
    assert set(KILL_ORDER) == set(PHASE_NAMES)
    assert {k[0][0] for _, k in plans} == set(PHASE_NAMES)
    assert {w for w, k in plans if k[0][0] == "reading"} == {1, 2}
    assert {w for w, _ in plans} == {1, 2}
    assert any(len(k) > 1 for _, k in plans)
    assert trial_plan(3) == trial_plan(3)


# --------------------------------------------------------------------------------------------
# validate: one line per problem, including a manifest whose recorded sha256 was edited
# --------------------------------------------------------------------------------------------
def test_validate_reports_each_problem_and_build_repairs_them(tmp_path, inputs, reference):
    """Damage four shards four ways (flipped byte, truncated, missing, and an intact file whose
    manifest sha256 was edited): ``validate`` exits 1 with exactly one line per shard; a new
    ``build`` into the folder rewrites exactly those four and ends equal to the reference."""
    _, recipe = inputs
    ref, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref["out"], out)
    # the copied recipe.yaml names the reference folder; the build rewrites it (digest masks it)
    (out / "recipe.yaml").write_bytes((out / "recipe.yaml").read_bytes().replace(str(ref["out"]).encode(),
                                                                                 str(out).encode()))
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text())
    shards = manifest["shards"]
    flip, trunc, gone, edited = (shards[i]["path"] for i in (0, 3, 6, 9))
    data = bytearray((out / flip).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / flip).write_bytes(bytes(data))
    (out / trunc).write_bytes((out / trunc).read_bytes()[:-1])
    (out / gone).unlink()
    s = shards[9]["sha256"]
    shards[9]["sha256"] = s[:-1] + ("0" if s[-1] != "0" else "1")
    mpath.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    from als_datasets.cli import app

    r = CliRunner().invoke(app, ["validate", str(out)])
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 4, lines
    by_path = {}
    for ln in lines:
        assert ln.startswith(f"{out}/"), ln
        path, _, problem = ln[len(f"{out}/"):].partition(": ")
        assert path not in by_path, f"two lines for {path}: {lines}"
        by_path[path] = problem
    assert set(by_path) == {flip, trunc, gone, edited}
    assert "sha256" in by_path[flip] and "sha256" in by_path[edited]
    assert "bytes" in by_path[trunc] and "missing" in by_path[gone]
    assert "valid" not in r.stdout

    log = tmp_path / "log"
    _run_to_end(_build_cmd(recipe, out, 1), log)
    assert "4 shard(s) written, 1 reused" in log.read_text()  # one task per damaged file
    _check_like_reference(out, ref, "rebuilt after damage")


def test_validate_command_exit_code(tmp_path, reference):
    """The installed command (not just the typer app) exits 1 when a shard is missing."""
    ref, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref["out"], out)
    gone = json.loads((out / "manifest.json").read_text())["shards"][1]["path"]
    (out / gone).unlink()
    r = subprocess.run([sys.executable, "-m", "als_datasets", "validate", str(out)], capture_output=True, text=True,
                       timeout=RUN_TIMEOUT_S)
    assert r.stderr.strip() == f"{out}/{gone}: missing"
    assert r.returncode == 1


# --------------------------------------------------------------------------------------------
# EPT over HTTP: a killed build resumes without fetching again the datasets it had staged
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ept_inputs(tmp_path_factory):
    """Three EPT datasets (the MVK points, each a unit higher than the last; paged hierarchy,
    small nodes) served on 127.0.0.1 by a Range server that logs every path and answers node
    requests slowly (the reading phase lasts long enough to be killed in), and a recipe naming
    their URLs."""
    import laspy
    import range_server
    from ept_writer import write_ept

    from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud

    root = tmp_path_factory.mktemp("kill_resume_ept")
    src = root / "in"
    src.mkdir()
    info = inspect_pointcloud(MVK)
    las = laspy.read(MVK)
    files = {}
    for k, c in enumerate(COPIES):
        pts = {"x": np.asarray(las.x), "y": np.asarray(las.y), "z": np.asarray(las.z) + k,
               **{f: np.asarray(getattr(las, f)) for f in ("intensity", "return_number", "number_of_returns",
                                                           "classification")}}
        write_ept(src / c, pts, {"wkt": info.crs.to_wkt()}, max_points=300, span=8, step=2)
        files.update({f"{c}/{p.relative_to(src / c).as_posix()}": p for p in (src / c).rglob("*") if p.is_file()})

    class SlowLoggingHandler(range_server._Handler):
        def _serve(self, head: bool) -> None:
            self.server.seen.append(self.path)
            if "/ept-data/" in self.path:
                time.sleep(self.server.delay)
            return super()._serve(head)

    srv = range_server.RangeServer(files)
    srv._srv.RequestHandlerClass = SlowLoggingHandler
    srv._srv.seen, srv._srv.delay = [], 0.0
    landcover_around(src / "lc.tif", footprint_lonlat(info).bounds,
                     pattern=lambda h, w: 41 + (np.indices((h, w))[1] < w // 3) * -19)
    with srv:
        urls = [srv.url(f"{c}/ept.json") for c in COPIES]
        recipe = write_recipe(src / "r.yaml", name="kr", tile_size_m=500, grid_res_m=25, samples_per_project=9,
                              landcover={"path": "lc.tif"}, dem={"path": "lc.tif"},
                              projects=[{"name": "kr", "pointclouds": urls, "pointcloud_crs": None}],
                              output={"dir": "out", "shard_max_samples": 2})
        yield root, recipe, srv._srv


def _ept_fetches(seen: list[str]) -> dict[str, int]:
    """Node requests per dataset."""
    out = dict.fromkeys(COPIES, 0)
    for p in seen:
        parts = p.lstrip("/").split("/")
        if len(parts) > 2 and parts[1] == "ept-data":
            out[parts[0]] += 1
    return out


def test_kill_and_resume_ept_over_http(ept_inputs):
    root, recipe, server = ept_inputs
    ref_out = root / "ref" / "out"
    ref_out.parent.mkdir()
    _run_to_end(_build_cmd(recipe, ref_out, 1), ref_out.parent / "log")
    ref = {"digest": _digest(ref_out), "keys": _keys(ref_out)}
    assert len(ref["keys"]["index"]) == 9
    full = _ept_fetches(server.seen)
    assert all(full.values()), full

    out = root / "t" / "out"
    out.parent.mkdir()
    log = out.parent / "log"
    cmd = _build_cmd(recipe, out, 1)
    server.delay = 0.05  # nodes arrive slowly: the kill lands while the files are being read
    p = _start(cmd, log)
    done_dir = out / ".build" / "staging" / "_done"
    t0 = time.monotonic()
    try:
        while p.poll() is None and not (done_dir.is_dir() and any(done_dir.glob("*.json"))):
            assert time.monotonic() - t0 < RUN_TIMEOUT_S, log.read_text()
            time.sleep(0.002)
    finally:
        _kill_group(p)
    server.delay = 0.0
    assert p.returncode != 0, "the build ended before it could be killed"
    staged = {COPIES[int(m.stem[1:])] for m in done_dir.glob("f*.json")}
    assert staged and staged != set(COPIES), staged
    server.seen.clear()
    _run_to_end(cmd, log)
    again = _ept_fetches(server.seen)
    print(f"staged before the kill: {sorted(staged)}; node requests of the resumed run {again} "
          f"(an uninterrupted build: {full})")
    assert all(again[c] == 0 for c in staged), again
    assert all(again[c] == full[c] for c in COPIES if c not in staged), (again, full)
    _check_like_reference(out, ref, "EPT build killed while reading, resumed")
