"""orchestrator/host.py, process_start: a process's start time to about 10 ms (psutil's is off
by up to 1 s, the size of the start-up phases it is used to measure)."""

from __future__ import annotations

import subprocess
import sys
import time

from orchestrator.host import process_start


def test_a_new_process_started_when_we_started_it():
    before = time.time()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(0.3)
        started = process_start(proc.pid)
        assert started is not None
        assert before - 0.05 <= started <= before + 0.25, started - before
    finally:
        proc.kill()
        proc.wait()


def test_this_process_and_a_missing_one():
    assert process_start() < time.time()
    assert process_start(2**22 + 12345) is None  # no such pid
