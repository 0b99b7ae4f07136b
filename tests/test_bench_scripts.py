"""The benchmark scripts run as `python bench/<name>.py`, which puts bench/ first on sys.path."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_no_bench_script_shadows_a_standard_library_module():
    # bench/queue.py once did: every other bench script then imported it for `queue`.
    names = {script.stem for script in BENCH.glob("*.py")}
    assert names, "no bench scripts found"
    assert not names & sys.stdlib_module_names
