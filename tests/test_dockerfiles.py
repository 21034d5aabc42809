"""The images' recipes: every COPY source exists; each runtime set installs and imports without torch."""

from __future__ import annotations

import re
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = ("Dockerfile.shard", "Dockerfile.reduce")


def copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        if re.match(r"^\s*COPY\s", line) and "--from=" not in line:
            sources.extend(line.split()[1:-1])
    return sources


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_file_exists(name: str) -> None:
    sources = copy_sources(REPO / name)
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"{name} copies {source}, which is not in the repository"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "imports", "absent"),
    [
        (
            "shard",
            "import shard_job.child, shard_job.plan, witple_batch.embedder",
            ("torch", "transformers", "optimum"),
        ),
        ("reduce", "import reduce_job.run, reduce_job.cli", ("torch", "transformers", "onnxruntime")),
    ],
)
def test_runtime_set_installs_and_imports_without_torch(
    tmp_path: Path, extra: str, imports: str, absent: tuple
) -> None:
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = str(target / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "-c", str(REPO / "constraints.txt"), f"{REPO}[{extra}]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    check = (
        f"{imports}\n"
        "import importlib.util\n"
        f"present = [m for m in {absent!r} if importlib.util.find_spec(m) is not None]\n"
        "print(','.join(present))\n"
    )
    result = subprocess.run([python, "-c", check], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    help_text = subprocess.run([python, "-m", f"{extra}_job", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert help_text.returncode == 0 and "usage" in help_text.stdout
