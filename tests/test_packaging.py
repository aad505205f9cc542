"""The wheel users install: built by the real build backend, it holds every file the code needs at run time
(the UI's templates and vendored assets, py.typed, READMEs) and none of the tests that live beside the code."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("tracelake-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_every_file_the_ui_serves_is_in_the_wheel(wheel_files: set[str]) -> None:
    root = REPO / "pipeline" / "ui"
    served = {p.relative_to(REPO).as_posix() for d in ("templates", "static") for p in (root / d).rglob("*")}
    served = {p for p in served if (REPO / p).is_file()}
    assert served and served <= wheel_files, sorted(served - wheel_files)
    assert "pipeline/ui/static/vendor/uplot/uPlot.iife.min.js" in wheel_files
    assert {"core/py.typed", "processors/README.md"} <= wheel_files


def test_no_test_code_ships(wheel_files: set[str]) -> None:
    names = {Path(n).name for n in wheel_files}
    assert not {n for n in names if n.startswith("test_") or n == "conftest.py"}
    assert not [
        n for n in wheel_files if n.startswith("tests/") or (n.endswith("/testing.py") and n.startswith("processors/"))
    ]
    # what processor authors test with is public and ships
    assert "pipeline/testing.py" in wheel_files


def test_every_package_module_ships(wheel_files: set[str]) -> None:
    code = {
        p.relative_to(REPO).as_posix()
        for pkg in ("core", "pipeline", "processors", "sinks")
        for p in (REPO / pkg).rglob("*.py")
        if not p.name.startswith("test_") and p.name != "conftest.py" and "__pycache__" not in p.parts
    }
    code = {c for c in code if not (c.startswith("processors/") and c.endswith("/testing.py"))}
    assert code <= wheel_files, sorted(code - wheel_files)
