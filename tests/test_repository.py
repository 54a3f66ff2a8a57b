"""The repository's own rules: dependencies in step, notebooks without outputs, a working CLI."""

import json
import re
import subprocess
import sys
from pathlib import Path

import jupyter_server_mathjax
import nbformat
import tomllib

from t2i.core import runtime

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


def test_html_pages_load_nothing_from_the_network(tmp_path):
    """`make course`'s HTML settings on a page with math, a picture and a widget (a progress
    bar's output): every script, style and font it loads is inline or in mathjax/ beside it."""
    nb = nbformat.v4.new_notebook(
        metadata={
            "widgets": {
                "application/vnd.jupyter.widget-state+json": {
                    "state": {},
                    "version_major": 2,
                    "version_minor": 0,
                }
            }
        }
    )
    widget = {"model_id": "0", "version_major": 2, "version_minor": 0}
    png = (  # a 1x1 PNG
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9"
        "awAAAABJRU5ErkJggg=="
    )
    nb.cells = [
        nbformat.v4.new_markdown_cell("The loss: $L = \\|\\epsilon - \\hat\\epsilon\\|^2$."),
        nbformat.v4.new_code_cell(
            "bar",
            outputs=[
                nbformat.v4.new_output(
                    "display_data",
                    {"application/vnd.jupyter.widget-view+json": widget, "text/plain": "bar"},
                ),
                nbformat.v4.new_output("display_data", {"image/png": png}),
            ],
        ),
    ]
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    config = ROOT / "etc" / "nbconvert" / "offline_html.py"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--config",
            str(config),
            "--to",
            "html",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    html = (tmp_path / "page.html").read_text()
    loads = re.findall(r"""(?:src|href)\s*=\s*["']([^"'#][^"']*)["']|url\(["']?([^)"']+)""", html)
    loads = [a or b for a, b in loads]
    assert loads, "the page loads nothing at all: the pattern is wrong"
    remote = [u for u in loads if not (u.startswith("data:") or u.startswith("mathjax/"))]
    assert remote == []
    mathjax = [u for u in loads if u.startswith("mathjax/")]
    assert [u.split("?")[0] for u in mathjax] == ["mathjax/MathJax.js"]
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    assert (static / "MathJax.js").is_file()  # what the Makefile copies to build/html/mathjax


def test_the_default_data_folder_is_the_checkouts_data(monkeypatch, tmp_path):
    """Without T2I_DATA, datasets and checkpoints go to data/ at the root of the checkout (where
    data/README.md is), whatever the working folder: a notebook's kernel runs in notebooks/."""
    monkeypatch.delenv("T2I_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert runtime.data_dir() == ROOT / "data"
