"""Packaging: the top-level folders install as `orchestra.*`, and nothing else does.

pyproject.toml maps `techniques/`, `backends/`, `search/` and `kernels/` into
the `orchestra` namespace. A mistake there either drops a subpackage from the
wheel or installs a generic top-level `search`/`kernels`/`backends` module that
clashes with other distributions, and neither shows up in the other tests:
they run from the repository, where the folders are importable anyway. So these
tests look at what an install really provides, from outside the repository.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = {"techniques": "techniques", "backends": "backends", "search": "search", "kernels": "kernels"}
#: What the wheel must contain: each mapped folder, plus the core's own subpackage.
REQUIRED = [f"orchestra/{name}/__init__.py" for name in (*SUBPACKAGES, "tasks")] + [
    "orchestra/backends/local_engine/fused_decode.cpp",  # package data: compiled at first use
]
#: Generic names that must never become importable top-level modules.
FORBIDDEN_TOP_LEVEL = ["techniques", "backends", "search", "kernels"]
#: Left out of the copy the wheel is built from: not sources, or stale build state.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs", "*.png"
)


def _python(python: str | Path, code: str, cwd: Path) -> dict:
    """Run `code` isolated (-I: no cwd, PYTHONPATH or user site on sys.path) and return its printed JSON."""
    done = subprocess.run(
        [str(python), "-I", "-c", textwrap.dedent(code)],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the sources.

    Not built in place: setuptools reuses `build/lib`, so a module deleted from
    the sources would still ship, and the build would write into a tree others
    are working in.
    """
    if importlib.util.find_spec("setuptools") is None:
        pytest.fail("setuptools is missing from the test environment (it is in the `test` extra)")
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    out = base / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("orchestra-*.whl")
    return built


def test_wheel_holds_only_the_orchestra_namespace(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    strays = [n for n in names if not (n.startswith("orchestra/") or n.startswith(f"{dist_info}/"))]
    assert not strays, f"files outside orchestra/ in the wheel: {strays}"
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, f"subpackages missing from the wheel: {missing}"
    top_level = {n.split("/")[0] for n in names}
    assert not top_level & set(FORBIDDEN_TOP_LEVEL)
    # Every module ships, nested subpackages included (each must be listed in `packages`).
    for package, folder in {"": "orchestra", **SUBPACKAGES}.items():
        prefix = f"orchestra/{package}/" if package else "orchestra/"
        for module in (ROOT / folder).rglob("*.py"):
            relative = module.relative_to(ROOT / folder).as_posix()
            assert prefix + relative in names, f"{folder}/{relative} is not in the wheel"
    if f"{dist_info}/top_level.txt" in names:
        assert zipfile.ZipFile(wheel).read(f"{dist_info}/top_level.txt").decode().split() == ["orchestra"]


def test_editable_install_maps_the_folders_into_orchestra(tmp_path: Path):
    """The environment the tests run in, seen from a neutral directory (not the repository)."""
    found = _python(sys.executable, f"""
        import importlib.util, json
        top = {{name: importlib.util.find_spec(name) is not None for name in {FORBIDDEN_TOP_LEVEL!r}}}
        sub = {{name: importlib.util.find_spec("orchestra." + name).origin for name in {list(SUBPACKAGES)!r}}}
        print(json.dumps({{"top": top, "sub": sub}}))
    """, cwd=tmp_path)
    assert not any(found["top"].values()), f"generic top-level modules importable: {found['top']}"
    for package, folder in SUBPACKAGES.items():
        origin = Path(found["sub"][package]).resolve()
        assert origin == (ROOT / folder / "__init__.py").resolve(), f"orchestra.{package} -> {origin}"


def test_wheel_installs_into_a_fresh_environment(wheel: Path, tmp_path: Path):
    """Install the wheel alone into a new venv and import the subpackages from there."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--quiet", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    # The fresh venv has orchestra and nothing else. The generic names are checked
    # there first; then this environment's site-packages is appended to sys.path
    # for the dependencies (pydantic, ...) so the packages can really be imported.
    # Appending a folder does not run its .pth files, so the editable install of
    # the repository is not picked up: `orchestra` can only come from the venv.
    deps = sysconfig.get_paths()["purelib"]
    found = _python(python, f"""
        import importlib, importlib.util, json, sys, sysconfig
        site = sysconfig.get_paths()["purelib"]
        top = {{name: importlib.util.find_spec(name) is not None for name in {FORBIDDEN_TOP_LEVEL!r}}}
        sys.path.append({deps!r})
        files = {{name: importlib.import_module(name).__file__
                 for name in ["orchestra"] + ["orchestra." + n for n in {[*SUBPACKAGES, "tasks"]!r}]}}
        print(json.dumps({{"site": site, "top": top, "files": files}}))
    """, cwd=tmp_path)
    assert not any(found["top"].values()), f"generic top-level modules importable: {found['top']}"
    package_root = Path(found["site"]).resolve() / "orchestra"
    for name, file in found["files"].items():
        assert Path(file).resolve().is_relative_to(package_root), f"{name} imported from {file}"
    assert (env / "bin" / "orchestra").exists() or sys.platform == "win32", "console script not installed"
