"""Every shell command of the README, run as a user would type it (slow: builds the demos and
pretrains on them), from a fresh working directory with `builders/` and `notebooks/` beside it.

A command that cannot run here is listed in SKIPPED with the reason (it needs the network, a
cluster, the user's own recipe or GPUs); the pre-training commands run with `--max-steps 2`
appended when they give no length; `push` runs against the in-process Hub (tests/hub_server.py).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: (pattern, reason): README commands this test does not run
SKIPPED = [
    (r"^pip install", "installs packages (network); the extras it names are checked against pyproject.toml"),
    (r"^export HF_TOKEN", "sets the user's token; the test's Hub takes a fake one"),
    (r"builders/sentinel2-", "searches a public STAC API (internet); tests/test_satellite_stac.py builds from a "
                             "loopback STAC stub"),
    (r"my-3dep\.yaml", "the user's own 3DEP recipe (builders/3dep-template.yaml needs the real archive)"),
    (r"^torchrun .*--data DIR", "several processes on a cluster-sized config (tests/test_torchrun.py covers DDP)"),
    (r"^python notebooks/pretrain_reference\.py", "builds and trains for minutes (tests/test_pretrain_notebook.py)"),
]


def readme_commands() -> list[str]:
    """The command lines of the README's ```bash blocks, comments stripped, in order."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _skip_reason(line: str) -> str | None:
    return next((why for pat, why in SKIPPED if re.search(pat, line)), None)


def test_readme_pip_extras_exist():
    tomllib = pytest.importorskip("tomllib")
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = set()
    for line in readme_commands():
        for m in re.finditer(r"\.\[([a-z,]+)\]", line):
            named |= set(m.group(1).split(","))
    assert named and named <= extras, (named, extras)
    deps = " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert "torch" not in deps  # `pip install -e .` (the build) does not pull torch


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from tests.hub_server import HubServer, hub_env

    work = tmp_path / "work"
    work.mkdir()
    for name in ("builders", "notebooks"):
        (work / name).symlink_to(ROOT / name)  # recipes resolve their paths from the real folder
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ran, skipped = [], []
    with HubServer() as server:
        env.update(hub_env(monkeypatch, server, tmp_path))
        for line in readme_commands():
            why = _skip_reason(line)
            if why is None and "satellite-real.yaml" in line and not (ROOT.parent / "shared" / "data").is_dir():
                why = "the real scenes of ../shared/data are not beside this checkout"
            if why:
                skipped.append((line, why))
                continue
            args = shlex.split(line.replace("[--private]", ""))
            if args[0] == "als-datasets":
                args = [sys.executable, "-m", "als_datasets", *args[1:]]
            if "pretrain" in args and "--max-steps" not in args:
                args += ["--max-steps", "2"]
            r = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, f"README command failed: {line}\n{r.stderr[-3000:]}"
            ran.append(line)
    # what the README promises about the results
    assert (work / "runs" / "demo-geospatial-bev-mae-tiny" / "last.pt").is_file()
    assert (work / "runs" / "demo-geospatial-bev-mae-tiny" / "probe.json").is_file()
    assert (work / "report-comparison" / "comparison.json").is_file()
    assert len(ran) >= 12 and all(why for _, why in skipped), (ran, skipped)
