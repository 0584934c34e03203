"""Repository hygiene a newcomer relies on: the README's commands, what CI runs, what is committed."""

from __future__ import annotations

import pathlib
import re
import subprocess

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
    assert test_command in ci.splitlines(), test_command
    assert "python3 -m venv" in ci and '-e ".[test]"' in ci


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
