"""The orchestrator.compress package as the command line imports it: light (no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# every module of the package but layers.py, which defines an nn.Module (torch) by design
LIGHT = [
    "adapters",
    "checkpoint",
    "export",
    "finetune",
    "lowrank",
    "measure",
    "pipeline",
    "prune",
    "quantize",
    "records",
    "report",
    "selection",
    "spec",
]


def test_import_stays_light():
    modules = ", ".join(["orchestrator.compress"] + [f"orchestrator.compress.{m}" for m in LIGHT])
    code = (
        f"import sys, {modules}; "
        "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"
