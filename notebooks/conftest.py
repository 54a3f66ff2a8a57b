"""At the end of the notebook run, print every check cell's numbers (nbval keeps no outputs)."""

import time

from t2i.front import checks

START = time.time()


def pytest_terminal_summary(terminalreporter):
    records = checks.saved(since=START)
    if records:
        terminalreporter.section("check numbers of the notebooks run")
    for record in records:
        name = record.pop("notebook")
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in record.items()))
