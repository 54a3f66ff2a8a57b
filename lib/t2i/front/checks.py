"""The last cell of every notebook: assert what a student should see, and report the numbers.

`report` prints one line "T2I-CHECK {json}" that `python -m t2i summary` collects from the
executed notebooks, keeps the same record in data/checks/<notebook>.json (the test run prints
those at its end, since nbval keeps no outputs), then asserts every bar, so a silent failure
cannot pass CI.
"""

from __future__ import annotations

import json
import operator

from t2i.core import runtime

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
PREFIX = "T2I-CHECK "


def report(notebook: str, numbers: dict, bars: dict[str, tuple[str, float]]) -> None:
    """Show the notebook's numbers as a table, each against its bar {name: (op, threshold)},
    print the record's line, then assert every bar."""
    clean = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in numbers.items()}
    record = {"notebook": notebook, **clean}
    _show(table(numbers, bars))
    print(PREFIX + json.dumps(record))
    with runtime.atomic_path(runtime.data_dir() / "checks" / f"{notebook}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    failed = [
        f"{name} = {numbers[name]} (bar: {op} {bar})"
        for name, (op, bar) in bars.items()
        if not _OPS[op](numbers[name], bar)
    ]
    assert not failed, "below the bar: " + "; ".join(failed)
    print(f"all {len(bars)} checks pass")


def table(numbers: dict, bars: dict[str, tuple[str, float]]) -> str:
    """The numbers as a Markdown table: each value, its bar where it has one, and ✓ or ✗."""
    lines = ["| number | value | bar | |", "|---|---|---|---|"]
    for name, raw in numbers.items():
        value = round(raw, 4) if isinstance(raw, float) else raw
        if name in bars:
            op, bar = bars[name]
            verdict = "✓" if _OPS[op](raw, bar) else "✗"  # as the assertion judges it
            lines.append(f"| {name} | {value} | {op} {bar} | {verdict} |")
        else:
            lines.append(f"| {name} | {value} | | |")
    return "\n".join(lines)


def _show(markdown: str) -> None:
    """Rendered in a notebook, as text elsewhere."""
    from IPython import get_ipython
    from IPython.display import Markdown, display

    if get_ipython() is not None:
        display(Markdown(markdown))
    else:
        print(markdown)


def collect(paths) -> list[dict]:
    """The T2I-CHECK records found in the outputs of executed notebooks."""
    out = []
    for path in paths:
        nb = json.loads(open(path).read())
        for cell in nb.get("cells", []):
            for o in cell.get("outputs", []):
                text = "".join(o.get("text", ""))
                for line in text.splitlines():
                    if line.startswith(PREFIX):
                        out.append(json.loads(line[len(PREFIX) :]))
    return out


def saved(since: float = 0.0) -> list[dict]:
    """The records that `report` kept in data/checks, written at or after time `since`."""
    folder = runtime.data_dir() / "checks"
    paths = sorted(p for p in folder.glob("*.json") if p.stat().st_mtime >= since)
    return [json.loads(p.read_text()) for p in paths]
