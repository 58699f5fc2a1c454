"""The Makefile's environment handling: when `make test` rebuilds .venv and when it does not.

Each test copies the Makefile and the two files it watches into a temporary folder, fakes a
.venv there, and asks make what it would do (`make -n`), so nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def project_with_venv(tmp_path: Path, python: Optional[str]) -> Path:
    """The Makefile and its two inputs in tmp_path, with a .venv whose bin/python links to
    ``python``, or, for ``None``, a real virtual environment made without pip."""
    for name in ("Makefile", "requirements.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    if python is None:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")],
                       check=True, timeout=120)
    else:
        bin_dir = tmp_path / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python").symlink_to(python)
    stamp = tmp_path / ".venv" / ".installed"
    stamp.touch()
    later = time.time() + 10  # newer than the files it stands for
    os.utime(stamp, (later, later))
    return tmp_path


def dry_run(project: Path) -> str:
    # A clean environment: under `make test` this runs inside make, whose MAKELEVEL and
    # MAKEFLAGS would otherwise turn on "Entering directory" lines and pass options down.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    done = subprocess.run(["make", "--no-print-directory", "-n", "test"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_up_to_date_venv_is_used_as_it_is(tmp_path: Path) -> None:
    project = project_with_venv(tmp_path, sys.executable)
    commands = dry_run(project)
    assert "pip install" not in commands and "-m venv" not in commands
    assert ".venv/bin/python -m pytest" in commands
    assert (project / ".venv" / ".installed").exists()


def test_a_venv_whose_python_no_longer_runs_is_rebuilt_from_scratch(tmp_path: Path) -> None:
    project = project_with_venv(tmp_path, str(tmp_path / "removed" / "python3"))  # a dangling link
    commands = dry_run(project)
    assert not (project / ".venv" / ".installed").exists(), "the stamp of a broken .venv goes"
    assert "-m venv --clear .venv" in commands
    assert "pip install --quiet -r requirements.txt" in commands


def test_a_venv_without_pip_is_rebuilt_from_scratch(tmp_path: Path) -> None:
    # what `python3 -m venv` leaves on Debian without python3-venv: a python that runs, no pip
    project = project_with_venv(tmp_path, None)
    commands = dry_run(project)
    assert not (project / ".venv" / ".installed").exists()
    assert "-m venv --clear .venv" in commands


def test_a_changed_requirements_file_reinstalls(tmp_path: Path) -> None:
    project = project_with_venv(tmp_path, sys.executable)
    later = time.time() + 20
    os.utime(project / "requirements.txt", (later, later))
    assert "pip install --quiet -r requirements.txt" in dry_run(project)
