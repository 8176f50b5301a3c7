"""The cluster path end to end: a real 3-node Ray cluster on 127.0.0.1 (a head with no CPUs and
two worker nodes of one CPU, each its own raylet, token auth on) and moto's S3 server, started
by cluster/local_cluster.py as `make cluster-up` starts them, and runs whose storage_path is a
bucket (s3://). What a user of the README's cluster section does, command for command:

- the first job on the new cluster (`ray job submit --working-dir . -- orch run ...`) trains on
  both worker nodes and leaves its run dir, checkpoints and ledger rows as objects in the
  bucket; `orch runs`, `orch report`, `orch compare` read them on the client side;
- a worker node lost after the first checkpoint (its raylet SIGKILLed), a new node joins: the
  run resumes from that checkpoint and ends with the same metrics as an uninterrupted run, one
  run in the ledger that counts the restart;
- the S3 server stopped (SIGSTOP) for 15 s mid-run: the run rides it out;
- a sweep on s3:// whose driver is killed resumes with --resume, every trial run once;
- a node lost under an in-process sweep trial: Tune restarts it on another node from its
  checkpoint;
- `orch translate` (T5) and `orch rollout` (DQN) load their models from the bucket;
- an unreachable endpoint, a missing bucket, missing credentials: exit 2 with a message that
  names storage_path, before Ray starts and before any ledger row.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "cluster"))
from local_cluster import LocalCluster  # noqa: E402 - cluster/ is a folder of scripts

pytestmark = pytest.mark.integration
BUCKET = "s3://orch/runs"
ORCH = [sys.executable, "-m", "orchestrator.cli"]
MNIST = ["train.epochs=6", "checkpoint.every_steps=32", "failure.max_failures=2"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.up(workers=2, cpus=1, bucket="orch")
        yield c
    finally:
        c.down()


def _env(cluster, **extra) -> dict[str, str]:
    env = cluster.env()
    env.pop("ORCH_FAULTS", None)
    env.update(extra)
    return env


def _s3(cluster):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=cluster.s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def _keys(cluster, prefix: str) -> list[str]:
    s3, keys, token = _s3(cluster), [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket="orch", Prefix=prefix, **kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


def _read(cluster, key: str) -> bytes:
    return _s3(cluster).get_object(Bucket="orch", Key=key)["Body"].read()


def _submit(cluster, args: list[str], env_vars: dict | None = None) -> str:
    """`ray job submit --no-wait --working-dir <repo> -- orch run ...`; the submission id."""
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        "submit",
        "--no-wait",
        "--working-dir",
        str(ROOT),
    ]
    if env_vars:
        cmd += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
    out = subprocess.run(
        cmd + ["--", "orch", "run", *args],
        env=_env(cluster),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return next(
        w.strip("'\"")
        for w in (out.stdout + out.stderr).split()
        if w.strip("'\"").startswith("raysubmit_")
    )


def _wait(cluster, sub: str, timeout_s: float = 400) -> tuple[str, str]:
    """(final status, logs) of a job."""
    from orchestrator.cluster.jobs import make_client

    client = make_client(cluster.dashboard_url, env=cluster.client_env())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str(client.get_job_status(sub).value)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status, client.get_job_logs(sub)
        time.sleep(1)
    raise AssertionError(f"{sub} not done after {timeout_s} s:\n{client.get_job_logs(sub)[-3000:]}")


def _ledger(cluster) -> list[dict]:
    """Every ledger event in the bucket, read in this process as the client would."""
    from orchestrator import ledger, rundir

    with pytest.MonkeyPatch.context() as mp:
        for k, v in cluster.s3_env().items():
            mp.setenv(k, v)
        rundir._fs_for.cache_clear()  # a filesystem for this cluster's endpoint
        try:
            return ledger.read_events(BUCKET).to_pylist()
        finally:
            rundir._fs_for.cache_clear()


def _summary(cluster, name: str) -> dict:
    return json.loads(_read(cluster, f"runs/{name}/summary.json"))


def _wait_for_key(cluster, prefix: str, suffix: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(k.endswith(suffix) for k in _keys(cluster, prefix)):
            return
        time.sleep(0.5)
    raise AssertionError(f"no {prefix}...{suffix} after {timeout_s} s")


@pytest.fixture(scope="module")
def first_run(cluster):
    """The first job on the new cluster: MNIST on both worker nodes, storage in the bucket."""
    sub = _submit(cluster, ["jobs/mnist_mlp.yaml", *MNIST, "name=first", f"storage_path={BUCKET}"])
    status, logs = _wait(cluster, sub)
    assert status == "SUCCEEDED", logs[-4000:]
    return _summary(cluster, "first")


def test_first_job_on_a_new_cluster_trains_across_nodes_into_the_bucket(cluster, first_run):
    s = first_run
    assert s["status"] == "SUCCEEDED" and s["metrics"]["accuracy"] > 0.85
    assert s["run_dir"] == f"{BUCKET}/first" and s["checkpoint"].startswith("s3://orch/runs/first/")
    nodes = {w["node_id"] for w in s["workers"]}
    assert len(nodes) == 2 and s["restarts"] == 0  # rank 0 and rank 1 on the two worker nodes
    keys = _keys(cluster, "runs/")
    for name in (
        "spec.resolved.yaml",
        "plan.yaml",
        "summary.json",
        "system.jsonl",
        "checkpoint_000192/_COMPLETE",
        "checkpoint_000192/model.pt",
    ):
        assert f"runs/first/{name}" in keys, name
    assert any(k.startswith("runs/first/metrics/") for k in keys)
    assert any(k.startswith("runs/first/events.out.tfevents") for k in keys)  # TensorBoard
    assert sum(k.startswith("runs/_ledger/") and k.endswith(".parquet") for k in keys) >= 3
    rows = [
        json.loads(line)
        for key in keys
        if key.startswith("runs/first/metrics/")
        for line in _read(cluster, key).decode().splitlines()
    ]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 192  # every step once, in order


def test_client_reads_runs_reports_and_compares_from_the_bucket(cluster, first_run, tmp_path):
    env = _env(cluster)
    out = subprocess.run(
        [*ORCH, "runs", "--storage-path", BUCKET, "--status", "succeeded"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0 and "first" in out.stdout, out.stdout + out.stderr
    out = subprocess.run(
        [*ORCH, "report", "first", "--storage-path", BUCKET],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    page = (tmp_path / "reports" / "first" / "index.html").read_text()
    assert "checkpoint_000192" in page and first_run["workers"][0]["node_id"][:12] in page
    assert "runs/first/report/index.html" in _keys(cluster, "runs/first/report/")


def test_node_loss_resumes_on_a_new_node_with_the_same_result(cluster, first_run, tmp_path):
    # The same spec as the first run, slowed after step 40 so a node can be lost mid-training.
    sub = _submit(
        cluster,
        ["jobs/mnist_mlp.yaml", *MNIST, "name=lost", f"storage_path={BUCKET}"],
        env_vars={"ORCH_FAULTS": json.dumps({"slow_after_step": 40, "sleep_s": 0.1})},
    )
    _wait_for_key(cluster, "runs/lost/", "checkpoint_000064/_COMPLETE")
    victim = cluster.worker_nodes()[0]["name"]
    cluster.kill_node(victim)
    cluster.add_node()
    status, logs = _wait(cluster, sub)
    assert status == "SUCCEEDED", logs[-4000:]
    s = _summary(cluster, "lost")
    assert s["restarts"] == 1 and s["resumed_from_step"] in (64, 96), s
    assert "attempt 2 (restart 1): resumed from step" in logs
    # Same seed, same data order, resumed exactly: the uninterrupted run's numbers.
    assert abs(s["metrics"]["accuracy"] - first_run["metrics"]["accuracy"]) < 0.01
    assert abs(s["metrics"]["loss"] - first_run["metrics"]["loss"]) < 0.05
    events = [r for r in _ledger(cluster) if r["run_name"] == "lost"]
    assert len({r["run_id"] for r in events}) == 1  # one run, restarted inside
    assert events[-1]["status"] == "SUCCEEDED"
    assert json.loads(events[-1]["extra"])["restarts"] == 1
    out = subprocess.run(
        [
            *ORCH,
            "compare",
            "first",
            "lost",
            "--storage-path",
            BUCKET,
            "--json",
            "--out",
            str(tmp_path / "c.png"),
        ],
        env=_env(cluster),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["spec"] == {}  # the same job, run twice


def test_s3_outage_of_15_s_is_ridden_out(cluster, first_run):
    env = _env(cluster, ORCH_FAULTS=json.dumps({"slow_after_step": 40, "sleep_s": 0.1}))
    cmd = [
        *ORCH,
        "run",
        "jobs/mnist_mlp.yaml",
        *MNIST,
        "name=outage",
        f"storage_path={BUCKET}",
        "--address",
        cluster.gcs_address,
    ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for_key(cluster, "runs/outage/", "checkpoint_000032/_COMPLETE")
        cluster.pause_s3()
        time.sleep(15)
    finally:
        cluster.resume_s3()
    out, _ = proc.communicate(timeout=400)
    if proc.returncode != 0:  # the other allowed ending: a clear failure, then the same command
        again = subprocess.run(
            cmd, env=_env(cluster), cwd=ROOT, capture_output=True, text=True, timeout=400
        )
        assert again.returncode == 0, again.stdout[-3000:]
        assert _summary(cluster, "outage")["resumed_from_step"] is not None
    s = _summary(cluster, "outage")
    assert s["status"] == "SUCCEEDED", out[-3000:]
    assert abs(s["metrics"]["accuracy"] - first_run["metrics"]["accuracy"]) < 0.01
    keys = _keys(cluster, "runs/outage/")
    ckpts = {k.split("/")[2] for k in keys if re.match(r"runs/outage/checkpoint_\d+/", k)}
    assert ckpts
    for ckpt in ckpts:  # every checkpoint left is complete
        assert f"runs/outage/{ckpt}/_COMPLETE" in keys, ckpt


SWEEP = """
name: ssw
workload: mnist_mlp
resources: {workers: 1}
train: {epochs: 2, log_every: 8}
checkpoint: {every_steps: 16}
storage_path: s3://orch/runs
sweep:
  metric: accuracy
  mode: max
  num_samples: 1
  max_concurrent: 2
  algorithm: grid
  search_space:
    train.lr: {grid: [0.001, 0.002, 0.003]}
"""


def test_sweep_on_s3_whose_driver_is_killed_resumes_and_runs_each_trial_once(cluster, tmp_path):
    spec = tmp_path / "ssw.yaml"
    spec.write_text(SWEEP)
    env = _env(cluster, ORCH_FAULTS="")
    cmd = [*ORCH, "sweep", str(spec), "--name", "ssw-1", "--address", cluster.gcs_address]
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    _wait_for_key(cluster, "runs/ssw-1/trials/", "/_COMPLETE", timeout_s=240)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    out = subprocess.run(
        [*cmd, "--resume"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    events = _ledger(cluster)
    ended: dict[str, int] = {}
    for r in events:
        if (
            r["kind"] == "trial"
            and r["sweep_id"] == "ssw-1"
            and r["status"] in ("SUCCEEDED", "STOPPED")
        ):
            tid = json.loads(r["extra"])["trial_id"]
            ended[tid] = ended.get(tid, 0) + 1
    assert len(ended) == 3 and set(ended.values()) == {1}, ended
    best = json.loads(_read(cluster, "runs/ssw-1/best.json"))
    assert best["status"] == "SUCCEEDED" and best["best_metric"] > 0.7


def test_an_in_process_sweep_trial_on_a_lost_node_resumes_on_another(cluster, tmp_path):
    # Two trials, one on each one-CPU node, each in its Tune trial's own process (the
    # default): a node lost after a trial checkpointed. failure.max_failures becomes Tune's
    # restart of that trial, which resumes from its checkpoint on the node that joins.
    spec = tmp_path / "lost-sweep.yaml"
    spec.write_text(
        SWEEP.replace("name: ssw", "name: lsw")
        .replace("[0.001, 0.002, 0.003]", "[0.001, 0.003]")
        .replace("resources: {workers: 1}", "resources: {workers: 1}\nfailure: {max_failures: 1}")
    )
    env = _env(cluster, ORCH_FAULTS=json.dumps({"slow_after_step": 0, "sleep_s": 0.2}))
    cmd = [*ORCH, "sweep", str(spec), "--name", "lsw-1", "--address", cluster.gcs_address]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    # Both trials have a checkpoint in the bucket, so whichever node is lost, its trial has
    # one to resume from (Tune may not have taken the report yet: the trial finds it then
    # in its run dir).
    deadline = time.time() + 240
    while True:
        done = {
            k.split("/")[3]
            for k in _keys(cluster, "runs/lsw-1/trials/")
            if k.endswith("/_COMPLETE")
        }
        if len(done) >= 2:
            break
        assert time.time() < deadline and proc.poll() is None, "no checkpoint of both trials"
        time.sleep(0.5)
    cluster.kill_node(cluster.worker_nodes()[0]["name"])
    cluster.add_node()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert "trials: each in its Tune trial's own process" in out
    ended = [
        r
        for r in _ledger(cluster)
        if r["kind"] == "trial" and r["sweep_id"] == "lsw-1" and r["status"] == "SUCCEEDED"
    ]
    assert len({json.loads(r["extra"])["trial_id"] for r in ended}) == 2 == len(ended)
    attempts = [
        json.loads(_read(cluster, k))
        for k in _keys(cluster, "runs/lsw-1/trials/")
        if "/attempts/" in k
    ]
    resumed = [a for a in attempts if a["resumed_from_step"]]
    assert len(resumed) == 1 and len(attempts) == 3, attempts

    def trial(a):  # lsw-1-<n>-<hash>: the run id adds -r1 after a Tune restore, and -<hex>
        return "-".join(a["run_id"].split("-")[:4])

    lost = [a for a in attempts if trial(a) == trial(resumed[0])]
    assert len({a["workers"][0]["node_id"] for a in lost}) == 2  # another node


def test_translate_and_rollout_load_their_models_from_the_bucket(cluster, tmp_path):
    env = _env(cluster)
    addr = ["--address", cluster.gcs_address]
    t5 = subprocess.run(
        [
            *ORCH,
            "run",
            "jobs/t5_translation.yaml",
            "name=t5",
            "train.max_steps=10",
            "data.n_val=8",
            "data.n_test=8",
            f"storage_path={BUCKET}",
            *addr,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert t5.returncode == 0, t5.stdout[-3000:]
    out = subprocess.run(
        [*ORCH, "translate", f"{BUCKET}/t5", "forty-two"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip(), out.stderr[-2000:]
    dqn = subprocess.run(
        [
            *ORCH,
            "run",
            "jobs/cartpole_dqn.yaml",
            "name=dqn",
            "train.stop_env_steps=2000",
            "train.eval_episodes=1",
            "checkpoint.every_steps=1000",
            f"storage_path={BUCKET}",
            *addr,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert dqn.returncode == 0, dqn.stdout[-3000:]
    assert any(k.endswith("/_COMPLETE") for k in _keys(cluster, "runs/dqn/checkpoint_"))
    out = subprocess.run(
        [*ORCH, "rollout", f"{BUCKET}/dqn", "--episodes", "2", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["episodes"] == 2


@pytest.mark.parametrize("case", ["missing-bucket", "unreachable", "no-credentials"])
def test_bad_storage_is_refused_before_ray_and_before_any_row(cluster, case, tmp_path):
    env = _env(cluster)
    storage = BUCKET
    if case == "missing-bucket":
        storage = "s3://no-such-bucket/runs"
    elif case == "unreachable":
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    else:
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.pop(k)
        env["HOME"] = str(tmp_path)  # and no ~/.aws
    before = len(_keys(cluster, "runs/_ledger/"))
    t0 = time.monotonic()
    out = subprocess.run(
        [*ORCH, "run", "jobs/mnist_mlp.yaml", f"name=bad-{case}", f"storage_path={storage}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 9, out.stdout[-2000:] + out.stderr[-2000:]  # StorageError
    assert "storage_path" in out.stderr and "To fix" in out.stderr, out.stderr
    assert "Ray" not in out.stdout and time.monotonic() - t0 < 60  # Ray never started
    assert len(_keys(cluster, "runs/_ledger/")) == before


def test_your_module_runs_from_your_folder_via_ray_job_submit_and_orch_submit(cluster, tmp_path):
    """A workload module of your own project, shipped with --working-dir (docs/
    your_workload.md): the workers import it from their own copy of the folder."""
    import shutil

    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    shutil.copy(ROOT / "jobs" / "mnist_mlp.py", tmp_path / "mypkg" / "mytrain.py")
    spec = (ROOT / "jobs" / "mnist_mlp.yaml").read_text()
    (tmp_path / "my.yaml").write_text(
        spec.replace("workload: mnist_mlp", "workload: mypkg.mytrain")
    )
    env = _env(cluster)
    ray = str(Path(sys.executable).parent / "ray")
    out = subprocess.run(
        [
            ray,
            "job",
            "submit",
            "--working-dir",
            ".",
            "--",
            "orch",
            "run",
            "my.yaml",
            "name=mine-ray",
            "train.epochs=1",
            f"storage_path={BUCKET}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    out = subprocess.run(
        [
            *ORCH,
            "submit",
            "my.yaml",
            "name=mine-orch",
            "train.epochs=1",
            f"storage_path={BUCKET}",
            "--follow",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    for name in ("mine-ray", "mine-orch"):
        s = _summary(cluster, name)
        assert s["status"] == "SUCCEEDED" and len({w["node_id"] for w in s["workers"]}) == 2
