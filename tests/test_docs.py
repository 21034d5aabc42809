"""The README documents the repository as it is: its folder table names every top-level folder and
nothing else, its links resolve, the tests it and docs/ cite exist, and it stays a quickstart and
reference (figures live in benchmarks/README.md, history in git)."""

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


# `test_x.py`, `test_x.py::test_y`, `test_x.py::test_y[case]`, `::test_y` (in the file named last in
# its table row or paragraph) and `::test_y_*` (a family)
_CITED = re.compile(r"`(?:tests/)?(test_\w+\.py)?(?:::(\w+)(\*)?)?(?:\[[^\]`]*\])?`")


def test_every_cited_test_exists():
    cited = 0
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        current = None
        for line in page.read_text().splitlines():
            if line.startswith("|") or not line.strip():
                current = None
            for match in _CITED.finditer(line):
                file, name, family = match.groups()
                if file is not None:
                    current = REPO / "tests" / file
                    assert current.is_file(), (page.name, file)
                if name is None:
                    continue
                assert current is not None, (page.name, name)
                pattern = rf"^def {name}\w*\(" if family else rf"^def {name}\("
                assert re.search(pattern, current.read_text(), re.MULTILINE), (page.name, current.name, name)
                cited += 1
    assert cited > 50  # the citations were found at all


def test_the_readme_is_a_reference_not_a_log():
    assert len(README.splitlines()) <= 400
    assert not re.search(r"\bat commit [0-9a-f]{7}|the run before|earlier run", README)
