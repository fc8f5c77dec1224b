"""The launchers' choice of Python: fake interpreters on PATH, the Windows rule run by real Pythons,
a second real Python building a venv, and the dependencies resolving for the newest accepted version."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_SH = ROOT / "launch.sh"
LAUNCH_BAT = ROOT / "launch.bat"
ACCEPTED = [(3, minor) for minor in range(10, 15)]  # the rule the issue asks for: 3.10 to 3.14


def fake_bin(tmp_path: Path, pythons: dict[str, str], tools: dict[str, str] | None = None) -> Path:
    """A PATH with only what launch.sh needs before it has a Python, plus fake interpreters: each
    prints its "MAJOR MINOR BITS" answer to any probe, the way a real one answers the launcher's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answers = {**pythons, **(tools or {})}
    for tool in ("bash", "dirname", "head", "uname"):
        if tool not in answers:
            (bin_dir / tool).symlink_to(shutil.which(tool))
    for name, answer in answers.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{answer}\n")
        script.chmod(0o755)
    return bin_dir


def which_python(bin_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / "bash"), str(LAUNCH_SH), "which-python"],
        env={"PATH": str(bin_dir), "HOME": str(bin_dir.parent)},
        capture_output=True, text=True, timeout=60,
    )


def version(answer: str) -> str:
    return f'echo "{answer}"'


def test_newest_supported_python_on_path_wins(tmp_path):
    bin_dir = fake_bin(tmp_path, {
        "python3.11": version("3 11 64"),
        "python3.13": version("3 13 64"),
        "python3": version("3 9 64"),
        "python3.12": "exit 127",  # a pyenv shim for a version that is not active
    })
    result = which_python(bin_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("python3.13 (Python 3.13)")
    assert "python3 (3.9 is too old)" in result.stdout


def test_version_decides_not_the_name(tmp_path):
    bin_dir = fake_bin(tmp_path, {"python3.12": version("3 12 64"), "python3": version("3 14 64")})
    result = which_python(bin_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("python3 (Python 3.14)")


@pytest.mark.parametrize("answer, why", [
    ("3 9 64", "3.9 is too old"),
    ("3 15 64", "3.15 is newer than the studio has been checked with"),
    ("3 12 32", "3.12 is a 32-bit build"),
    ("2 7 64", "2.7 is too old"),
    ("Python 3.12", "does not report a version"),
])
def test_unsupported_pythons_are_refused_with_the_reason(tmp_path, answer, why):
    bin_dir = fake_bin(tmp_path, {"python3": version(answer)}, {"apt-get": "exit 0"})
    result = which_python(bin_dir)
    assert result.returncode == 1
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.count("\n") == 0, message
    assert "needs 64-bit Python 3.10 to 3.14" in message
    assert f"python3 ({why})" in message
    assert "sudo apt install python3 python3-venv" in message


@pytest.mark.parametrize("tools, command", [
    ({"apt-get": "exit 0"}, "sudo apt install python3 python3-venv"),
    ({"dnf": "exit 0"}, "sudo dnf install python3.12"),
    ({"pacman": "exit 0"}, "sudo pacman -S python"),
    ({"zypper": "exit 0"}, "sudo zypper install python312"),
    ({"uname": "echo Darwin", "brew": "exit 0"}, "brew install python@3.13"),
    ({"uname": "echo Darwin"}, "https://www.python.org/downloads/"),
    ({}, "https://www.python.org/downloads/"),
])
def test_no_python_names_the_install_command_for_this_system(tmp_path, tools, command):
    result = which_python(fake_bin(tmp_path, {}, tools))
    assert result.returncode == 1
    assert "none was found on PATH" in result.stderr
    assert command in result.stderr


def test_launchers_and_pyproject_agree_on_the_versions():
    sh = LAUNCH_SH.read_text()
    assert re.search(r"^PY_MINOR_MIN=10$", sh, re.M) and re.search(r"^PY_MINOR_MAX=14$", sh, re.M)
    names = re.search(r'^PYTHON_NAMES="([^"]+)"', sh, re.M).group(1).split()
    assert names[:5] == [f"python3.{minor}" for minor in range(14, 9, -1)]
    bat = LAUNCH_BAT.read_text()
    assert "for %%V in (3.14 3.13 3.12 3.11 3.10) do" in bat
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10,<3.15"' in pyproject
    for versions_line in re.findall(r"Python 3\.1\d[^\n]*", (ROOT / "README.md").read_text())[:1]:
        assert "3.10" in versions_line and "3.14" in versions_line


def bat_snippet(name: str) -> str:
    match = re.search(rf'^set "{name}=(.+)"$', LAUNCH_BAT.read_text(), re.M)
    assert match, name
    return match.group(1)


def real_pythons() -> dict[tuple[int, int], str]:
    """Real interpreters on this machine by version: PATH, pyenv's folder and /usr/bin."""
    found: dict[tuple[int, int], str] = {}
    candidates = [shutil.which(f"python3.{minor}") for minor in range(6, 16)]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in pyenv_root.glob("versions/3.*/bin/python3"))
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run([candidate, "-c", "import sys; print(*sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.split():
            found.setdefault(tuple(int(x) for x in out.stdout.split()), candidate)
    return found


def test_windows_rule_run_by_real_pythons():
    """launch.bat lets each candidate judge itself with SUPPORTED_CHECK: it prints its minor version
    and exits 0 when it fits. Run that exact snippet with every real Python this machine has."""
    check = bat_snippet("SUPPORTED_CHECK")
    for forbidden in '!%^"':
        assert forbidden not in check  # cmd would mangle it
    pythons = real_pythons() or {sys.version_info[:2]: sys.executable}
    for version_, python in pythons.items():
        out = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=30)
        if version_ in ACCEPTED:
            assert out.returncode == 0, (version_, out.stderr)
            assert out.stdout.split() == [str(version_[1])]
        else:
            assert out.returncode != 0, version_


def studio_sources() -> list[Path]:
    return [p for p in ROOT.rglob("*.py") if not ({".venv", ".git"} & set(p.relative_to(ROOT).parts))]


def stdlib_imports() -> set[str]:
    names: set[str] = set()
    for path in studio_sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names & set(sys.stdlib_module_names)


def test_a_second_supported_python_builds_a_venv_that_takes_the_studio(tmp_path):
    """With another accepted Python on this machine (a system 3.13 beside a 3.11 venv, say): make a
    venv with it, as the launcher would, compile every studio source with it and import every
    standard-library module the studio uses (3.13 removed some, e.g. imghdr and cgi). The oldest and
    the newest such Python both do it. The third-party wheels for the newest accepted version are
    checked by the resolver test below."""
    others = {v: p for v, p in real_pythons().items() if v in ACCEPTED and v != sys.version_info[:2]}
    if not others:
        pytest.skip("no second supported Python on this machine")
    modules = sorted(stdlib_imports())
    assert "json" in modules and "argparse" in modules
    for version_ in sorted({min(others), max(others)}):
        venv = tmp_path / f"venv{version_[0]}{version_[1]}"
        subprocess.run([others[version_], "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        python = venv / "bin" / "python"
        out = subprocess.run([str(python), "-c", "import sys; print(sys.prefix != sys.base_prefix, *sys.version_info[:2])"],
                             capture_output=True, text=True, check=True)
        assert out.stdout.split() == ["True", str(version_[0]), str(version_[1])]
        compiled = subprocess.run(
            [str(python), "-X", f"pycache_prefix={venv / 'pycache'}", "-m", "compileall", "-q",
             "-x", r"[/\\]\.(venv|git)[/\\]", str(ROOT)],
            capture_output=True, text=True, timeout=300)
        assert compiled.returncode == 0, (version_, compiled.stdout + compiled.stderr)
        imported = subprocess.run([str(python), "-c", f"import importlib; [importlib.import_module(m) for m in {modules!r}]"],
                                  capture_output=True, text=True, timeout=120)
        assert imported.returncode == 0, (version_, imported.stderr)


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def test_every_dependency_has_a_wheel_for_the_newest_accepted_python(tmp_path):
    """pip's resolver, for Python 3.14 and binary wheels only: the pinned torch, the requirements and
    the test extras must all resolve (metadata only, nothing is installed)."""
    if not pypi_reachable():
        pytest.skip("PyPI is not reachable from this machine")
    torch_spec = re.search(r'^TORCH_SPEC="([^"]+)"', LAUNCH_SH.read_text(), re.M).group(1).split()
    newest = max(ACCEPTED)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
         "--python-version", f"{newest[0]}.{newest[1]}", "--only-binary", ":all:", "--target", str(tmp_path / "t"),
         "--report", str(report), "-r", str(ROOT / "requirements-dev.txt"), *torch_spec],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    installed = {item["metadata"]["name"].lower(): item["download_info"]["url"].rsplit("/", 1)[-1]
                 for item in json.loads(report.read_text())["install"]}
    tag = f"cp{newest[0]}{newest[1]}"
    assert tag in installed["torch"], installed["torch"]
    assert {"gradio", "diffusers", "transformers", "sentence-transformers", "imagehash"} <= set(installed)
