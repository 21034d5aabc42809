"""The images' recipes: every COPY source exists; each runtime stage, built from exactly what it
copies, installs and imports without torch (a module the image forgets to copy fails here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = ("Dockerfile.shard", "Dockerfile.reduce")


def copy_sources(text: str) -> list[str]:
    """What `text` (a Dockerfile, or one stage of it) copies from the build context."""
    sources = []
    for line in text.splitlines():
        if re.match(r"^\s*COPY\s", line) and "--from=" not in line:
            sources.extend(line.split()[1:-1])
    return sources


def runtime_sources(dockerfile: Path) -> list[str]:
    """What the last stage (the image that ships) copies from the build context."""
    return copy_sources(dockerfile.read_text().rsplit("\nFROM ", 1)[-1])


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_file_exists(name: str) -> None:
    sources = copy_sources((REPO / name).read_text())
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"{name} copies {source}, which is not in the repository"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_runs_its_job_by_a_command_a_job_definition_replaces(name: str) -> None:
    runtime = (REPO / name).read_text().rsplit("\nFROM ", 1)[-1]
    job = name.split(".")[1]
    assert "ENTRYPOINT" not in runtime  # a job definition's command is the whole command line
    assert f'CMD ["python", "-m", "{job}_job"]' in runtime
    # Batch runs no health check: the image's is for `docker run`, and nothing may say otherwise
    assert "Batch ignores HEALTHCHECK" in runtime
    readme = (REPO / "README.md").read_text()
    assert "Batch has no health check" in readme and "every 30 s" not in readme


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "imports", "absent"),
    [
        (
            "shard",
            "import shard_job.child, coordinator.cli, coordinator.submit, witple_batch.embedder, shard_job.cli",
            ("torch", "transformers", "optimum", "reduce_job", "local_stack"),
        ),
        (
            "reduce",
            "import reduce_job.run, reduce_job.cli, reduce_job.status, witple_batch.preflight",
            ("torch", "transformers", "onnxruntime", "shard_job", "coordinator", "local_stack"),
        ),
    ],
)
def test_runtime_set_installs_and_imports_without_torch(
    tmp_path: Path, extra: str, imports: str, absent: tuple
) -> None:
    context = tmp_path / "context"  # the build context as the image's last stage sees it
    context.mkdir()
    for source in runtime_sources(REPO / f"Dockerfile.{extra}"):
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / source, context / source)
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)  # this venv's pip installs into it: no pip of its own to set up
    python = str(target / "bin" / "python")
    install = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-compile"),
            *("-c", str(context / "constraints.txt"), f"{context}[{extra}]"),
        ],
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
