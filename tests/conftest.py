"""Shared fixtures. Integration tests share one local Ray per session (starting Ray costs
seconds); unit tests must not start Ray at all."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A head a developer started with `orch up` (~/.orch/head.json) is never joined by the tests:
# they look for one in a folder of their own (tests/integration/test_local_head.py starts one).
os.environ["ORCH_HOME"] = tempfile.mkdtemp(prefix="orch-home-")
# orch's Ray Train poll interval for the test heads and the jobs they run too, which are started
# before any runtime.connect in this process.
from orchestrator.runtime import default_train_polling  # noqa: E402 - after the sys.path entry

default_train_polling()


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for the whole test session (4 logical CPUs on 2 cores, so a
    2-worker job and Ray's own actors fit)."""
    import ray

    from orchestrator import runtime

    info = None
    if not ray.is_initialized():
        # With its dashboard (off by default in an embedded Ray): tests read Ray's state API
        # (ray.util.state.list_actors) of this session's Ray. `orch run` subprocesses that
        # tests start get the default.
        saved = os.environ.get(runtime.DASHBOARD_ENV)
        os.environ[runtime.DASHBOARD_ENV] = "1"
        try:
            info = runtime.connect(num_cpus=4)
        finally:
            if saved is None:
                os.environ.pop(runtime.DASHBOARD_ENV)
            else:
                os.environ[runtime.DASHBOARD_ENV] = saved
    yield ray
    # At the session's end: stop this Ray and end whatever of it outlived its raylet. A Ray
    # Train controller of this session's Ray was once found alive, orphaned, after a suite run.
    left = runtime.shutdown(info)
    if left:
        sys.__stderr__.write(f"\n[conftest] ended what the session's Ray left: {sorted(left)}\n")


# One uninterrupted 2-worker MNIST DDP run for the whole session, shared by the tests that need
# one of this shape: test_mnist_run (DDP learns, checkpoints kept, ledger rows) and
# test_reliability's worker kill (the same spec, killed once, must end with these metrics).
# One Train launch (~12 s here) fewer than each making its own.
MNIST_REFERENCE = [
    "train.epochs=6",
    "checkpoint.every_steps=32",
    "train.log_every=4",
    "failure.max_failures=1",
]


@pytest.fixture(scope="session")
def mnist_reference_run(ray_local, tmp_path_factory):
    from orchestrator.launch import launch
    from orchestrator.plan import plan
    from orchestrator.spec import load_spec

    storage = tmp_path_factory.mktemp("reference") / "runs"
    spec = load_spec(
        ROOT / "jobs/mnist_mlp.yaml", [*MNIST_REFERENCE, f"storage_path={storage}", "name=ddp2"]
    )
    before = helper_actor_ids()
    summary = launch(plan(spec))
    return {
        "summary": summary,
        "storage": storage,
        "overrides": list(MNIST_REFERENCE),
        "new_helper_actors": helper_actor_ids() - before,
    }


# Ray Train helper actors that orch leaves out of launches in an embedded Ray
# (orchestrator/launch/ray_train.py): the session's Ray is embedded in this process.
TRAIN_HELPERS = ("PlacementGroupCleaner", "DatasetManager")


def helper_actor_ids() -> set[str]:
    """Ids of every such actor the session's Ray has ever had (dead ones included)."""
    from ray.util.state import list_actors

    from orchestrator import runtime

    return {
        a.actor_id
        for name in TRAIN_HELPERS
        for a in list_actors(
            address=runtime.local_address(), limit=10000, filters=[("class_name", "=", name)]
        )
    }


@pytest.fixture
def tmp_runs(tmp_path):
    """A storage_path for one test's runs and ledger."""
    d = tmp_path / "runs"
    d.mkdir()
    return d


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("RUN_SLOW") == "1"
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    for item in items:
        if "integration" in str(item.fspath) and "integration" not in item.keywords:
            item.add_marker(pytest.mark.integration)
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: set RUN_SLOW=1"))
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
