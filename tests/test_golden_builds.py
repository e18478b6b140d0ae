"""Same bytes: the demo builds write exactly the files recorded in ``data/golden/demo_builds.json``
(see ``golden_builds.py``; recorded before the package was reshaped into a core and kinds)."""

from __future__ import annotations

import json

import pytest
from golden_builds import GOLDEN, all_hashes, compare


def test_demo_builds_write_the_recorded_bytes(tmp_path_factory, demo_recipe):
    recorded = json.loads(GOLDEN.read_text())
    found = all_hashes(tmp_path_factory.mktemp("golden"))
    problems, skipped = compare(recorded, found)
    assert not problems, "\n".join(problems)
    if skipped:
        pytest.skip(f"{len(skipped)} parquet/PNG files not compared: pyarrow or matplotlib differs from the recording "
                    f"({recorded['versions']}); every other file matched")
