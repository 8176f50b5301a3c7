"""What planning a run costs in a fresh process (every `orch run`, `orch submit` entrypoint and
sweep trial plans once), side by side:

- `plan(spec)` with the memory table (the model on the meta device and a meta forward, as every
  plan did before 2026-11-26) against without it (what a CPU run with a named strategy now
  does; `orch plan`, `strategy: auto` and GPU runs still build it);
- parsing a spec's YAML with PyYAML's pure-Python SafeLoader against libyaml's CSafeLoader
  (what orchestrator.spec uses when PyYAML has it), on the shipped spec and on a 500-deep
  nested value of the kind the spec fuzz test feeds in.

    .venv/bin/python bench/plan_cost.py                 # 3 fresh processes per plan variant
    .venv/bin/python bench/plan_cost.py --repeats 5 --spec jobs/resnet_images.yaml

CPU seconds are the child's own (user + system, from resource.getrusage), from after its
imports (torch, orchestrator) to after plan() returned; medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch  # noqa: F401 - the driver has it imported anyway (ray.train.torch)
from orchestrator.plan import plan
from orchestrator.spec import load_spec
spec = load_spec(sys.argv[2], [])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0, t0 = cpu(), time.perf_counter()
p = plan(spec, memory=sys.argv[3] == "1")
print(json.dumps({"cpu": cpu() - c0, "wall": time.perf_counter() - t0,
                  "table": p.memory is not None}))
"""


def plan_in_child(spec: str, memory: bool) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), spec, "1" if memory else "0"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def yaml_parse(text: str, loader, repeats: int) -> float:
    import yaml

    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            yaml.load(text, Loader=loader)  # noqa: S506 - safe loaders only
        except (yaml.YAMLError, RecursionError):
            pass
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="jobs/mnist_mlp.yaml")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    rows = {True: [], False: []}
    for _ in range(a.repeats):  # alternate, so that load drifts hit both alike
        for memory in (True, False):
            rows[memory].append(plan_in_child(a.spec, memory))
    med = {m: {k: statistics.median(r[k] for r in rows[m]) for k in ("cpu", "wall")} for m in rows}
    print(f"plan({a.spec}) in a fresh process, median of {a.repeats}:")
    print(f"  {'':28} {'CPU s':>7} {'wall s':>7}")
    print(f"  {'with the memory table':28} {med[True]['cpu']:7.2f} {med[True]['wall']:7.2f}")
    print(
        f"  {'without (CPU, named strategy)':28} {med[False]['cpu']:7.3f} {med[False]['wall']:7.3f}"
    )
    print(
        f"  saved per fresh plan: {med[True]['cpu'] - med[False]['cpu']:.2f} CPU-s "
        f"({med[True]['wall'] / max(med[False]['wall'], 1e-6):.0f}x less wall)"
    )

    import yaml

    shipped = (ROOT / a.spec).read_text()
    deep = shipped + "train2: " + "[" * 500 + "]" * 500 + "\n"
    print("YAML parse, best of 5 (pure-Python SafeLoader / libyaml CSafeLoader):")
    for name, text in (("shipped spec", shipped), ("500-deep value", deep)):
        py = yaml_parse(text, yaml.SafeLoader, 5)
        c = yaml_parse(text, yaml.CSafeLoader, 5)
        print(f"  {name:16} {py * 1000:8.2f} ms {c * 1000:8.2f} ms  {py / c:5.1f}x")


if __name__ == "__main__":
    main()
