"""The README documents the repository as it is: its folder table names every top-level folder and
nothing else, its links resolve, and it stays a quickstart and reference (figures live in
benchmarks/README.md, history in git)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_the_folder_table_matches_the_top_level_folders():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    folders = {path.split("/", 1)[0] for path in tracked.split() if "/" in path and not path.startswith(".")}
    table = set(re.findall(r"^\| `([a-z_]+)/` \|", README, re.MULTILINE))
    assert table == folders - {"tests"}  # the tests are the test command's, not a deployable


def test_every_relative_link_resolves():
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README):
        assert (REPO / target).exists(), target
    for page in (REPO / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)


def test_the_readme_is_a_reference_not_a_log():
    assert len(README.splitlines()) <= 400
    assert not re.search(r"\bat commit [0-9a-f]{7}|the run before|earlier run", README)
