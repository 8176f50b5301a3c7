"""Your own training code, on the session's real local Ray (docs/your_workload.md):

- a workload module in a folder outside the repository runs with `orch run` from that folder;
- `orch new NAME`'s files pass their own test and `orch run` reaches a falling loss;
- a plain PyTorch DDP script (no import of this project: torch.distributed and torchrun's
  environment only) trains on 2 workers through `workload: script`, its loss falls and the run
  is in the ledger; with one worker's script killed after its first checkpoint, Ray Train
  restarts the workers and the script resumes from that checkpoint;
- a script that exits non-zero is a FAILED run whose error holds the script's last lines.

(The same module through `ray job submit --working-dir` / `orch submit` on a multi-node
cluster: tests/integration/test_multinode.py.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import ledger, rundir

ROOT = Path(__file__).resolve().parents[2]
ORCH = [sys.executable, "-m", "orchestrator.cli"]
pytestmark = pytest.mark.integration

DDP_SCRIPT = '''"""A plain PyTorch DDP training script, as torchrun would run it."""
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = DDP(torch.nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
ckpt = os.path.join(os.environ.get("ORCH_CHECKPOINT_DIR", "."), "ckpt.pt")
start = 0
if os.path.exists(ckpt):
    state = torch.load(ckpt)
    model.module.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    start = state["step"]
    print(f"resumed from step {start}", flush=True)
steps, pause = int(sys.argv[1]), float(sys.argv[2])
g = torch.Generator().manual_seed(1000 * rank + start)
w_true = torch.arange(8.0)
for step in range(start + 1, steps + 1):
    x = torch.randn(32, 8, generator=g)
    loss = ((model(x).squeeze(-1) - x @ w_true) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if rank == 0 and step % 5 == 0:
        print(json.dumps({"step": step, "loss": loss.item()}), flush=True)
    if rank == 0 and step % 20 == 0:
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(),
                    "step": step}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
    time.sleep(pause)
dist.destroy_process_group()
'''


def _run(args, cwd, ray_local, timeout=400, **kw):
    from orchestrator import runtime

    return subprocess.run(
        [*ORCH, "run", *args, "--address", runtime.local_address()],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def test_a_module_of_your_own_folder_runs_with_orch_run(ray_local, tmp_path):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    shutil.copy(ROOT / "jobs" / "mnist_mlp.py", tmp_path / "mypkg" / "mytrain.py")
    spec = (ROOT / "jobs" / "mnist_mlp.yaml").read_text()
    (tmp_path / "my.yaml").write_text(
        spec.replace("workload: mnist_mlp", "workload: mypkg.mytrain").replace(
            "name: mnist-mlp", "name: mine"
        )
    )
    out = _run(["my.yaml", "train.epochs=2", "storage_path=runs"], tmp_path, ray_local)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    summary = json.loads((tmp_path / "runs" / "mine" / "summary.json").read_text())
    assert summary["status"] == "SUCCEEDED" and summary["metrics"]["accuracy"] > 0.8


def test_orch_new_passes_its_own_test_and_trains(ray_local, tmp_path):
    new = subprocess.run(
        [*ORCH, "new", "my_task"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert new.returncode == 0, new.stderr
    test = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_task.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert test.returncode == 0 and "2 passed" in test.stdout, test.stdout[-3000:]
    out = _run(["my_task.yaml", "train.epochs=4"], tmp_path, ray_local)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    losses = [r["loss"] for r in rundir.read_metrics(tmp_path / "runs" / "my_task") if "loss" in r]
    assert len(losses) >= 5 and sum(losses[-3:]) < sum(losses[:3])


@pytest.fixture
def script_project(tmp_path):
    (tmp_path / "ddp_train.py").write_text(DDP_SCRIPT)
    assert "orchestrator" not in DDP_SCRIPT
    (tmp_path / "ddp.yaml").write_text(
        "name: ddp\nworkload: script\nresources: {workers: 2}\n"
        "train: {script: ddp_train.py, args: ['60', '0']}\nstorage_path: runs\n"
    )
    return tmp_path


def test_a_plain_ddp_script_trains_on_two_workers(ray_local, script_project):
    out = _run(["ddp.yaml"], script_project, ray_local)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    run_dir = script_project / "runs" / "ddp"
    rows = rundir.read_metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(5, 61, 5))
    assert rows[-1]["loss"] < rows[0]["loss"] / 10
    assert (run_dir / "script_checkpoints" / "ckpt.pt").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len({w["rank"] for w in summary["workers"]}) == 2
    latest = [r for r in ledger.latest_by_run(script_project / "runs") if r["run_name"] == "ddp"]
    assert latest and latest[-1]["status"] == "SUCCEEDED"


def test_the_script_resumes_from_its_checkpoint_after_a_worker_is_killed(ray_local, script_project):
    import psutil

    from orchestrator import runtime

    cmd = [
        *ORCH,
        "run",
        "ddp.yaml",
        "name=ddp-kill",
        "failure.max_failures=1",
        "train.args=['80', '0.05']",
        "--address",
        runtime.local_address(),
    ]
    proc = subprocess.Popen(
        cmd, cwd=script_project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ckpt = script_project / "runs" / "ddp-kill" / "script_checkpoints" / "ckpt.pt"
    deadline = time.monotonic() + 180
    while not ckpt.exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    assert ckpt.exists()
    victims = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if (
                str(script_project / "ddp_train.py") in " ".join(p.info["cmdline"] or [])
                and p.environ().get("RANK") == "1"
            ):
                victims.append(p)
        except psutil.Error:
            continue
    assert len(victims) == 1
    victims[0].kill()  # rank 1's training process, after checkpoint 20
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-4000:]
    assert "resumed from step 20" in out or "resumed from step 40" in out
    summary = json.loads((script_project / "runs" / "ddp-kill" / "summary.json").read_text())
    assert summary["status"] == "SUCCEEDED" and summary["restarts"] == 1
    steps = [r["step"] for r in rundir.read_metrics(script_project / "runs" / "ddp-kill")]
    assert steps[-1] == 80


def test_a_script_that_fails_is_a_failed_run_with_its_last_lines(ray_local, tmp_path):
    (tmp_path / "bad.py").write_text(
        "import sys\nprint('loading the data')\nprint('boom-marker: no such table', "
        "file=sys.stderr)\nsys.exit(3)\n"
    )
    (tmp_path / "bad.yaml").write_text(
        "name: bad\nworkload: script\nresources: {workers: 1}\ntrain: {script: bad.py}\n"
        "storage_path: runs\n"
    )
    out = _run(["bad.yaml"], tmp_path, ray_local)
    assert out.returncode == 1, out.stdout[-3000:]
    summary = json.loads((tmp_path / "runs" / "bad" / "summary.json").read_text())
    assert summary["status"] == "FAILED"
    assert "exited with code 3" in summary["error"] and "boom-marker" in summary["error"]
    rows = [r for r in ledger.latest_by_run(tmp_path / "runs") if r["run_name"] == "bad"]
    assert rows[-1]["status"] == "FAILED" and "boom-marker" in rows[-1]["error"]
