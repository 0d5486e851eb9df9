"""What an installed wheel carries: the templates, so ``papy new`` works without a checkout.

The wheel is built offline from a copy of the sources (``--no-build-isolation``: the test
extra installs ``wheel``), installed without pip's dependency resolution into a fresh
virtual environment whose only way to the dependencies (rpyc, dill, posix_ipc) is a .pth
line to this interpreter's site-packages; ``papy`` there is the wheel's, not the checkout.
Costs a few seconds (a wheel build and a pip install, both offline): marked slow.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "imap", "papy")


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    done = subprocess.run(argv, cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
          "--no-build-isolation", "--wheel-dir", str(dist), str(source)], tmp_path)
    (wheel,) = dist.glob("papy-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path) -> Path:
    """A virtual environment without pip, that sees this interpreter's packages last."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                    "['purelib'])"], tmp_path).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
            *site.getsitepackages()}
    # plain path lines: their own .pth files (this checkout's editable finder) do not run
    Path(purelib, "outer_site_packages.pth").write_text("\n".join(sorted(here)) + "\n")
    return venv


@pytest.mark.slow
def test_papy_new_works_from_an_installed_wheel(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    venv = _fresh_venv(tmp_path)
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
          "--quiet", "--no-deps", "--no-index", str(wheel)], tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    where = _run([str(venv / "bin" / "python"), "-c", "import papy; print(papy.__file__)"],
                 work).stdout.strip()
    assert Path(where).is_relative_to(venv), where      # the wheel's papy, not the checkout

    listed = _run([str(venv / "bin" / "papy"), "new", "--list"], work).stdout.split()
    assert listed == ["grep", "psc", "remote", "wordcount"]
    _run([str(venv / "bin" / "papy"), "new", "mine", "--template", "wordcount"], work)
    made = (work / "mine.py").read_text(encoding="utf-8")
    shipped = (ROOT / "papy" / "templates" / "wordcount.py").read_text(encoding="utf-8")
    assert made.endswith(shipped)
