"""orchestrator/workloads.py and the workload checks of a spec, without Ray: a module of your
own project, a file, the built-in script workload, and the errors that name what was tried."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator import workloads
from orchestrator.errors import SpecError
from orchestrator.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder outside the repository: mypkg/mytrain.py (a copy of the MNIST job),
    train/my_job.py, a module without train_loop, a script; specs naming each."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    shutil.copy(ROOT / "jobs" / "mnist_mlp.py", tmp_path / "mypkg" / "mytrain_t.py")
    (tmp_path / "train").mkdir()
    shutil.copy(ROOT / "jobs" / "mnist_mlp.py", tmp_path / "train" / "file_job_t.py")
    (tmp_path / "mypkg" / "no_loop_t.py").write_text("X = 1\n")
    (tmp_path / "go.py").write_text("print('hi')\n")
    base = (ROOT / "jobs" / "mnist_mlp.yaml").read_text()
    for name, workload in (
        ("mod", "mypkg.mytrain_t"),
        ("file", "train/file_job_t.py"),
        ("missing", "mypkg.nothere_t"),
        ("nofile", "train/nope_t.py"),
        ("noloop", "mypkg.no_loop_t"),
    ):
        (tmp_path / f"{name}.yaml").write_text(
            base.replace("workload: mnist_mlp", f"workload: {workload}")
        )
    (tmp_path / "script.yaml").write_text(
        textwrap.dedent("""
        name: s
        workload: script
        train: {script: go.py, args: ["--x", "1"]}
    """)
    )
    (tmp_path / "script_missing.yaml").write_text(
        textwrap.dedent("""
        name: s
        workload: script
        train: {script: gone.py}
    """)
    )
    monkeypatch.chdir("/")  # the spec's folder is searched, wherever orch runs from
    saved = list(sys.path)
    yield tmp_path
    sys.path[:] = saved
    for key in [k for k in workloads._RESOLVED if k.endswith("_t") or k.endswith("_t.py")]:
        workloads._RESOLVED.pop(key)


def test_a_module_and_a_file_of_your_project_are_found_from_the_specs_folder(project):
    mod = load_spec(project / "mod.yaml")
    assert mod.workload == "mypkg.mytrain_t" and mod.train["hidden"] == [512, 256]
    assert workloads.location("mypkg.mytrain_t") == str(project)
    f = load_spec(project / "file.yaml")
    assert workloads.import_workload(f.workload).__file__ == str(
        project / "train" / "file_job_t.py"
    )
    assert workloads.location("train/file_job_t.py") == str(project / "train")


def test_errors_name_every_place_tried(project):
    with pytest.raises(SpecError) as info:
        load_spec(project / "missing.yaml")
    msg = str(info.value)
    assert "workload" in msg and str(project / "mypkg" / "nothere_t.py") in msg
    assert "installed module 'mypkg.nothere_t'" in msg and "mnist_mlp" in msg
    with pytest.raises(SpecError, match=r"not found at .*train/nope_t.py"):
        load_spec(project / "nofile.yaml")
    with pytest.raises(SpecError, match="no_loop_t.py has no train_loop"):
        load_spec(project / "noloop.yaml")


def test_the_script_workload_checks_and_resolves_its_script(project):
    s = load_spec(project / "script.yaml")
    assert s.train["script"] == str(project / "go.py") and s.train["args"] == ["--x", "1"]
    with pytest.raises(SpecError) as info:
        load_spec(project / "script_missing.yaml")
    assert info.value.paths == ["train.script"] and str(project / "gone.py") in str(info.value)


def test_orch_run_refuses_them_with_exit_2_before_ray(project):
    from orchestrator.cli import app

    for name in ("missing", "nofile", "noloop", "script_missing"):
        r = CliRunner().invoke(app, ["run", str(project / f"{name}.yaml")])
        assert r.exit_code == 2, (name, r.output)
        assert "orch run" not in r.output  # nothing started: no banner


def test_worker_paths_are_relative_inside_a_jobs_working_dir(tmp_path, monkeypatch):
    root = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab12"
    (root / "train").mkdir(parents=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("PYTHONPATH", str(root))
    assert workloads.worker_path(str(root / "train")) == "train"
    assert workloads.worker_path(str(root)) == "."
    assert workloads.worker_path("/opt/elsewhere") == "/opt/elsewhere"
    monkeypatch.chdir(tmp_path)  # Ray Train moves a worker's cwd away; PYTHONPATH stays
    assert workloads.on_worker("train") == root / "train"
