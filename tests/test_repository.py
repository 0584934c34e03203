"""Repository hygiene a newcomer relies on: the README's commands, what CI runs, what is committed."""

from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_gives_exactly_two_setup_commands_demo_and_tests():
    commands = _quick_start_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.endswith("python -m tfsmooth demo") and "pip install -e ." in demo
    assert 'pip install -e ".[test]"' in tests


def test_ci_runs_the_readme_test_command_from_a_fresh_venv():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = _quick_start_commands()[1].split("&&")[-1].strip()
    assert any(line.strip().startswith(test_command) for line in ci.splitlines()), test_command
    assert '-m venv "$scratch/' in ci and 'install --quiet -e ".[test]"' in ci


def _pyproject() -> dict:
    tomllib = pytest.importorskip(
        "tomllib", reason="tomllib is Python 3.11+; CI's newest run has it"
    )
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _floors_declared() -> dict[str, str]:
    """``{"tensorflow": "2.16.2", ...}`` from pyproject.toml's ``name>=version`` requirements."""
    project = _pyproject()["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["tfrs"]
    return dict(re.fullmatch(r"([\w-]+)>=([\w.]+)", r).groups() for r in requirements)


def _floors_pinned() -> dict[str, str]:
    text = (ROOT / ".ci" / "constraints-floor.txt").read_text()
    return dict(re.findall(r"^([\w-]+)==([\w.]+)$", text, re.M))


def test_ci_tests_exactly_the_declared_floors():
    declared, pinned = _floors_declared(), _floors_pinned()
    assert declared == pinned, (declared, pinned)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-c .ci/constraints-floor.txt" in ci


def test_readme_states_the_tested_matrix():
    section = README.split("### Tested versions", 1)[1].split("\n## ", 1)[0]
    for name, version in _floors_pinned().items():
        assert f"{version}" in section, (name, version)
    ci = (ROOT / ".ci" / "run").read_text()
    for part, python in re.findall(r"new_venv (newest|floors|wheel) (3\.\d+)", ci):
        assert re.search(rf"^\| {part} \| {re.escape(python)} \|", section, re.M), (part, python)


def test_package_metadata_matches_the_tested_pythons():
    project = _pyproject()["project"]
    ci = (ROOT / ".ci" / "run").read_text()
    tested = sorted(set(re.findall(r"new_venv \w+ (3\.\d+)", ci)), key=lambda v: int(v[2:]))
    classified = [
        c.rsplit(" ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert classified == tested, (classified, tested)
    assert project["requires-python"] == f">={tested[0]}"


def test_version_license_and_types_live_in_one_place_each():
    pyproject = _pyproject()
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tfsmooth.__version__"}
    assert re.search(
        r'^__version__ = "\d+\.\d+\.\d+"$', (ROOT / "tfsmooth" / "__init__.py").read_text(), re.M
    )
    assert not (ROOT / "setup.py").exists()
    assert pyproject["project"]["license-files"] == ["LICENSE"] and (ROOT / "LICENSE").is_file()
    assert (ROOT / "tfsmooth" / "py.typed").is_file()
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["tfsmooth"]
    # No invented addresses: URLs come when the project has a public home.
    assert all(
        "tfsmooth/tfsmooth" not in url for url in pyproject["project"].get("urls", {}).values()
    )


def _tracked_files() -> list[pathlib.Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist)
        return [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    return [ROOT / line for line in out.splitlines() if line]


def test_no_dataset_is_committed():
    data_suffixes = {".csv", ".dat", ".zip", ".parquet", ".tfrecord", ".npz", ".npy"}
    names = {"u.data", "u.item", "ratings.dat", "movies.dat"}
    committed = [
        p.relative_to(ROOT)
        for p in _tracked_files()
        if p.suffix in data_suffixes or p.name in names
    ]
    assert not committed, committed


def test_no_file_names_a_path_of_a_development_machine():
    machine_paths = re.compile("|".join(["/" + "work/", "/" + "root/", "/" + "tmp/pytest-of"]))
    offenders = []
    for path in _tracked_files():
        if path.suffix in {".png", ".jpg"} or not path.exists():
            continue
        text = path.read_text(errors="ignore")
        offenders += [
            f"{path.relative_to(ROOT)}: {m.group(0)}" for m in machine_paths.finditer(text)
        ]
    assert not offenders, offenders


def _imported_test_modules(source: str) -> list[str]:
    """The ``test_*`` modules a source imports, at any depth (``import``/``from ... import``)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        found += [n for n in names if n.split(".")[-1].startswith("test_")]
    return found


@pytest.mark.parametrize(
    "planted",
    [
        "from test_activations import smelu_reference",
        "import test_losses_catalog as catalog",
        "def f():\n    from test_metrics_ranking import reference_ranks\n",
        "from tests.test_tasks import interactions",
    ],
)
def test_the_import_guard_catches_a_planted_test_module_import(planted):
    assert _imported_test_modules(planted), planted


def test_no_test_module_imports_another():
    """References live in tests/references.py, data makers in tests/helpers.py: a test module
    importing another runs (and couples) that module's tests."""
    offenders = {
        path.name: _imported_test_modules(path.read_text())
        for path in sorted((ROOT / "tests").glob("*.py"))
    }
    offenders = {name: found for name, found in offenders.items() if found}
    assert not offenders, offenders
    assert (ROOT / "tests" / "references.py").exists()
