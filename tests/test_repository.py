"""The repository's own rules: dependencies in step, notebooks without outputs, a working CLI."""

import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pyproject = {_name(r) for r in project["dependencies"]}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("  - pip:")
    conda = {_name(line.split("- ", 1)[1]) for line in lines[start + 1 :] if "- " in line}
    assert conda == pyproject


def test_notebooks_are_committed_without_outputs():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks found"
    notebooks += sorted((ROOT / "tests").rglob("*.ipynb"))
    for path in notebooks:
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
                    f"{path.name} carries outputs: run `make strip` (or clear them in Jupyter)"
                )


def test_every_notebook_ends_with_a_check():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        assert "checks.report(" in "".join(code[-1]["source"]), path.name


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "t2i", *args], capture_output=True, text=True, check=True
    ).stdout


def test_cli_lists_its_commands():
    out = _cli("--help")
    for command in ("data", "judge", "summary"):
        assert command in out


def test_cli_judge_prints_one_json_object_of_accuracies():
    table = json.loads(_cli("judge", "--json", "--n", "100"))
    assert "32x32 shape" in table and "16x16 binding" in table
    assert all(0.0 <= v <= 1.0 for v in table.values())
    assert table["32x32 color"] >= 0.99
