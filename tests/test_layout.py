"""Who may import whom in lib/t2i, read from the source with ast (nothing is imported).

The library stacks in the course's order:

    core/    runtime, checkpoint cache, training loop, recipes, statistics
    world/   the shapes world: scenes, captions, tokenizer, judge, prompts, measures
    blocks/  layers, U-Net, diffusion: the parts the chapters build models from
    ch01_dvae/ .. ch07_unclip/   the chapters, in course order
    front/   command line, widgets, plots, notebook checks

A module may import its own package, the packages below it, and (a chapter) earlier chapters;
only the front (and `python -m t2i`) imports the front; no two modules import each other, even
through others; `t2i` is imported at the top of a module, never inside a function, except in
the CLI. Each failure names the offending import.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"
MACHINERY = {"core": 0, "world": 1, "blocks": 2}
FRONT = 100
FUNCTION_LEVEL_ALLOWED = {"t2i.front.cli"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """core 0, world 1, blocks 2, chapter NN 10 + NN, front 100; t2i itself above all."""
    top = module.split(".")[1] if "." in module else ""
    if top in MACHINERY:
        return MACHINERY[top]
    chapter = re.fullmatch(r"ch(\d\d)_\w+", top)
    if chapter:
        return 10 + int(chapter.group(1))
    if top == "front":
        return FRONT
    return FRONT + 1  # t2i/__init__.py, t2i/__main__.py


def imports(root: Path) -> list[tuple[str, str, int, bool]]:
    """(importer, imported module, line, inside a function) for every `t2i` import in lib/t2i."""
    modules = {module_name(p, root) for p in (root / "t2i").rglob("*.py")}
    out = []
    for path in sorted((root / "t2i").rglob("*.py")):
        me = module_name(path, root)
        tree = ast.parse(path.read_text())
        nested = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                frm = "." * node.level + (node.module or "")  # relative: named as written
                for a in node.names:
                    sub = f"{frm}.{a.name}"
                    targets.append(sub if sub in modules else frm)
            for t in targets:
                if t == "t2i" or t.startswith(("t2i.", ".")):
                    out.append((me, t, node.lineno, id(node) in nested))
    return out


def violations(root: Path) -> list[str]:
    found = []
    edges: dict[str, set[str]] = {}
    for me, dep, line, in_function in imports(root):
        where = f"{me} line {line} imports {dep}"
        if dep.startswith("."):
            found.append(f"{where}: a relative import (write t2i.<package>.<module>)")
            continue
        if in_function and me not in FUNCTION_LEVEL_ALLOWED:
            found.append(f"{where} inside a function")
        if dep == me:
            continue
        edges.setdefault(me, set()).add(dep)
        mine, theirs = layer(me), layer(dep)
        same_package = me.split(".")[:2] == dep.split(".")[:2]
        if theirs == FRONT and mine < FRONT:
            found.append(f"{where}: only the front imports the front")
        elif theirs > mine:
            found.append(f"{where}: upward (layer {theirs} above {mine})")
        elif theirs == mine and mine >= 10 and mine < FRONT and not same_package:
            found.append(f"{where}: a chapter imports only earlier chapters")
    # loops: a module that reaches itself through the modules it imports
    for start in edges:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    found.append("loop: " + " -> ".join(path + [nxt]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    return sorted(set(found))


def test_the_library_imports_only_downward_without_loops():
    assert violations(LIB) == []


def test_the_check_names_a_planted_upward_import(tmp_path):
    """The rule can fail: a copy of the library with core importing a chapter, a chapter
    importing a later one, and a function-level import is refused, each import named."""
    shutil.copytree(LIB / "t2i", tmp_path / "t2i")
    stats = tmp_path / "t2i" / "core" / "stats.py"
    stats.write_text(stats.read_text() + "\nfrom t2i.ch07_unclip import decoder  # noqa\n")
    clip = tmp_path / "t2i" / "ch03_clip" / "uses.py"
    clip.write_text(clip.read_text() + "\n\ndef f():\n    from t2i.ch06_glide import models\n")
    found = violations(tmp_path)
    assert any("t2i.core.stats" in v and "t2i.ch07_unclip.decoder" in v for v in found), found
    assert any("t2i.ch03_clip.uses" in v and "inside a function" in v for v in found), found
    assert any("t2i.ch03_clip.uses" in v and "upward" in v for v in found), found
