"""orchestrator/rundir.py: the one owner of a run directory's names, checkpoints and metrics."""

from __future__ import annotations

import json

import pytest

from orchestrator import rundir
from orchestrator.errors import CheckpointError


def test_uri_or_local_path():
    assert rundir.is_uri("s3://bucket/runs") and rundir.is_uri("gs://b/x")
    assert not rundir.is_uri("/tmp/runs") and not rundir.is_uri("runs") and not rundir.is_uri(None)
    assert rundir.resolve_storage("s3://bucket/runs") == "s3://bucket/runs"  # never via pathlib
    assert rundir.run_dir("s3://bucket/runs/", "mnist") == "s3://bucket/runs/mnist"
    assert rundir.join("/a/b", "c", "d/") == "/a/b/c/d"


def _checkpoint(run, name, files=("model.pt",), marker=True, listed=None):
    d = run / name
    d.mkdir(parents=True)
    for f in files:
        (d / f).write_bytes(b"x")
    if marker:
        (d / rundir.COMPLETE_MARKER).write_text(json.dumps({"files": list(listed or files)}))
    return d


def test_complete_means_the_marker_and_every_file_it_lists(tmp_path):
    ok = _checkpoint(tmp_path, "checkpoint_000010")
    no_marker = _checkpoint(tmp_path, "checkpoint_000020", marker=False)
    half_merged = _checkpoint(tmp_path, "checkpoint_000030", listed=["model.pt", "dcp/1.distcp"])
    empty_marker = tmp_path / "checkpoint_000040"  # RLlib's: a marker that lists nothing
    empty_marker.mkdir()
    (empty_marker / rundir.COMPLETE_MARKER).write_text("")
    torn = _checkpoint(tmp_path, "checkpoint_000050")
    (torn / rundir.COMPLETE_MARKER).write_text('{"files": ["mod')
    assert rundir.is_complete(ok) and rundir.is_complete(empty_marker)
    assert not rundir.is_complete(no_marker) and not rundir.is_complete(half_merged)
    assert not rundir.is_complete(torn)
    assert rundir.missing_files(half_merged) == ["dcp/1.distcp"]
    assert [rundir.basename(c) for c in rundir.complete_checkpoints(tmp_path)] == [
        "checkpoint_000010",
        "checkpoint_000040",
    ]
    assert rundir.basename(rundir.latest_complete(tmp_path)) == "checkpoint_000040"
    assert rundir.basename(
        rundir.latest_complete(tmp_path, before="checkpoint_000040")) == "checkpoint_000010"
    assert rundir.latest_complete(tmp_path / "missing") is None


def test_metrics_append_read_truncate_skip_a_torn_line(tmp_path):
    for step in (1, 2, 3):
        rundir.append_metrics(tmp_path, {"step": step, "loss": 1.0 / step})
    with open(rundir.metrics_path(tmp_path), "a") as fh:
        fh.write('{"step": 4, "lo')  # a writer killed mid-line
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [1, 2, 3]
    rundir.truncate_metrics(tmp_path, 2)
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [1, 2]
    assert rundir.metrics_path(tmp_path).read_text().endswith("\n")  # the torn line went too
    rundir.append_metrics(tmp_path, {"step": 3})
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [1, 2, 3]
    assert rundir.read_metrics(tmp_path / "none") == []


def test_files_are_written_whole(tmp_path):
    rundir.write_json(tmp_path / "run", rundir.SUMMARY_FILE, {"status": "SUCCEEDED"})
    assert rundir.read_json(tmp_path / "run", rundir.SUMMARY_FILE) == {"status": "SUCCEEDED"}
    assert rundir.read_json(tmp_path / "run", "missing.json") == {}
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_resolve_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        rundir.resolve_checkpoint(tmp_path / "nope")
    run = tmp_path / "run"
    for name, done in (
        ("checkpoint_000010", True),
        ("checkpoint_000020", True),
        ("checkpoint_000030", False),
    ):
        (run / name).mkdir(parents=True)
        (run / name / "model.pt").write_bytes(b"")
        if done:
            (run / name / "_COMPLETE").write_text("{}")
    assert rundir.resolve_checkpoint(run).name == "checkpoint_000020"  # newest complete one
    assert rundir.resolve_checkpoint(run / "checkpoint_000010").name == "checkpoint_000010"
    with pytest.raises(CheckpointError, match="incomplete"):
        rundir.resolve_checkpoint(run / "checkpoint_000030")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        rundir.resolve_checkpoint(tmp_path)
