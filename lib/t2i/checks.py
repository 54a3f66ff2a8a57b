"""The last cell of every notebook: assert what a student should see, and report the numbers.

`report` prints one line "T2I-CHECK {json}" that `python -m t2i summary` collects from the
executed notebooks, then asserts every bar, so a silent failure cannot pass CI.
"""

from __future__ import annotations

import json
import operator

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
PREFIX = "T2I-CHECK "


def report(notebook: str, numbers: dict, bars: dict[str, tuple[str, float]]) -> None:
    """Print the notebook's numbers, then assert each bar {name: (op, threshold)}."""
    clean = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in numbers.items()}
    print(PREFIX + json.dumps({"notebook": notebook, **clean}))
    failed = [
        f"{name} = {numbers[name]} (bar: {op} {bar})"
        for name, (op, bar) in bars.items()
        if not _OPS[op](numbers[name], bar)
    ]
    assert not failed, "below the bar: " + "; ".join(failed)
    print(f"all {len(bars)} checks pass")


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
