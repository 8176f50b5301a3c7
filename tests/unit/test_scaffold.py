"""orchestrator/scaffold.py (`orch new`): the files, and the names it refuses. That the files
train is shown in tests/integration/test_your_workload.py."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.scaffold import ScaffoldError, write_skeleton


def test_writes_a_workload_its_spec_and_its_test(tmp_path):
    paths = write_skeleton("my_task", tmp_path)
    assert [p.name for p in paths] == ["my_task.py", "my_task.yaml", "test_my_task.py"]
    code = (tmp_path / "my_task.py").read_text()
    for part in (
        "class Args(worker.OptimArgs)",
        "description=",
        "def build_model",
        "def train_loop(config",
        "worker.setup(config)",
        "sess.restore()",
        'if __name__ == "__main__"',
    ):
        assert part in code, part
    assert "workload: my_task" in (tmp_path / "my_task.yaml").read_text()
    compile(code, "my_task.py", "exec")
    compile((tmp_path / "test_my_task.py").read_text(), "test_my_task.py", "exec")


@pytest.mark.parametrize("name", ["9lives", "my-task", "class", "json", "mnist_mlp"])
def test_refuses_names_that_are_not_new_modules(tmp_path, name):
    with pytest.raises(ScaffoldError, match="NAME"):
        write_skeleton(name, tmp_path)


def test_never_overwrites_without_force(tmp_path):
    write_skeleton("task_a", tmp_path)
    r = CliRunner().invoke(app, ["new", "task_a", "--dir", str(tmp_path)])
    assert r.exit_code == 2 and "--force" in r.output
    r = CliRunner().invoke(app, ["new", "task_a", "--dir", str(tmp_path), "--force"])
    assert r.exit_code == 0 and "wrote" in r.output
