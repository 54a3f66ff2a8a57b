import json

import pytest

from t2i.front import checks


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_DATA", str(tmp_path))
    return tmp_path


def test_report_passes_when_bars_are_met_and_keeps_the_record(capsys, data_dir):
    checks.report("99_demo", {"acc": 0.96, "name": "x"}, {"acc": (">=", 0.95)})
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith(checks.PREFIX))
    assert json.loads(line[len(checks.PREFIX) :]) == {
        "notebook": "99_demo",
        "acc": 0.96,
        "name": "x",
    }
    assert "all 1 checks pass" in out
    assert checks.saved() == [{"notebook": "99_demo", "acc": 0.96, "name": "x"}]


def test_the_table_gives_each_number_its_bar_and_verdict():
    text = checks.table({"acc": 0.96, "t": 9, "name": "x"}, {"acc": (">=", 0.95), "t": ("<=", 5)})
    lines = text.splitlines()
    assert lines[2] == "| acc | 0.96 | >= 0.95 | ✓ |"
    assert lines[3] == "| t | 9 | <= 5 | ✗ |"
    assert lines[4] == "| name | x | | |"
    # shown rounded, judged unrounded: a value just under its bar is a ✗ even if it rounds up
    assert checks.table({"acc": 0.949996}, {"acc": (">=", 0.95)}).splitlines()[2].endswith("✗ |")


def test_report_fails_and_names_each_bar_missed():
    with pytest.raises(AssertionError, match=r"acc = 0.5 \(bar: >= 0.95\); t = 9 \(bar: <= 5\)"):
        checks.report(
            "99_demo",
            {"acc": 0.5, "t": 9, "ok": 1},
            {"acc": (">=", 0.95), "t": ("<=", 5), "ok": ("==", 1)},
        )


def test_saved_skips_records_older_than_since(data_dir):
    checks.report("99_demo", {"acc": 1.0}, {})
    assert checks.saved(since=0.0)
    path = data_dir / "checks" / "99_demo.json"
    assert checks.saved(since=path.stat().st_mtime + 1.0) == []


def test_collect_reads_the_line_from_an_executed_notebook(tmp_path):
    record = {"notebook": "99_demo", "acc": 1.0}
    nb = {
        "cells": [{"outputs": [{"text": ["noise\n", checks.PREFIX + json.dumps(record) + "\n"]}]}]
    }
    path = tmp_path / "demo.ipynb"
    path.write_text(json.dumps(nb))
    assert checks.collect([path]) == [record]
