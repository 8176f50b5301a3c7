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
    assert (
        rundir.basename(rundir.latest_complete(tmp_path, before="checkpoint_000040"))
        == "checkpoint_000010"
    )
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


def test_uri_metrics_are_chunks_and_a_truncation_writes_a_base(tmp_path):
    """A URI run dir (file:// here; s3:// alike) has no append: rank 0 writes chunks, a resume
    writes a base with the rows it keeps, readers start from the newest base."""
    run = f"file://{tmp_path}/run"
    w = rundir.MetricsWriter(run, flush_s=3600)
    for step in (1, 2, 3):
        w.add({"step": step, "time": step})
    w.flush()
    rundir.append_metrics(run, {"step": 4, "time": 4})  # one row, one chunk
    assert [r["step"] for r in rundir.read_metrics(run)] == [1, 2, 3, 4]
    tail = rundir.MetricsTail(run, from_start=True)
    assert [r["step"] for r in tail.poll()[0]] == [1, 2, 3, 4]
    rundir.truncate_metrics(run, 2)  # a restart from the checkpoint at step 2
    assert [r["step"] for r in rundir.read_metrics(run)] == [1, 2]
    w2 = rundir.MetricsWriter(run)
    w2.add({"step": 3, "time": 30})
    w2.close()
    assert [r["step"] for r in rundir.read_metrics(run)] == [1, 2, 3]
    rows, restarted = tail.poll()
    assert restarted == 2 and [(r["step"], r["time"]) for r in rows] == [(3, 30)]
    names = [n for n, _ in rundir.list_dir(f"{run}/metrics")]
    assert any(n.endswith(".base.jsonl") for n in names) and len(names) == 2  # old chunks gone


def test_a_tail_delivers_kept_rows_it_had_not_seen_after_a_cut(tmp_path):
    for step in (1, 2, 3):
        rundir.append_metrics(tmp_path, {"step": step, "time": step})
    tail = rundir.MetricsTail(tmp_path, from_start=True)
    assert [r["step"] for r in tail.poll()[0]] == [1, 2, 3]
    for step in (4, 5, 6):
        rundir.append_metrics(tmp_path, {"step": step, "time": step})
    rundir.truncate_metrics(tmp_path, 5)  # 4 and 5 kept but never delivered; 6 dropped
    rundir.append_metrics(tmp_path, {"step": 6, "time": 60})
    rows, restarted = tail.poll()
    assert restarted == 3 and [(r["step"], r["time"]) for r in rows] == [(4, 4), (5, 5), (6, 60)]
    assert tail.poll() == ([], None)


def test_attempts_are_one_file_each(tmp_path):
    rundir.record_attempt(str(tmp_path), "run-1", {"resumed_from_step": None, "workers": []})
    rundir.record_attempt(str(tmp_path), "run-1", {"resumed_from_step": 64, "workers": [{}]})
    rundir.record_attempt(str(tmp_path), "run-2", {"resumed_from_step": None})
    got = rundir.read_attempts(str(tmp_path), "run-1")
    assert [a["resumed_from_step"] for a in got] == [None, 64]


def test_unusable_storage_is_refused_with_what_to_set(monkeypatch, tmp_path):
    for k in (
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(rundir.StorageError, match="no AWS credentials.*To fix"):
        rundir.check_storage("s3://bucket/runs")
    rundir.check_storage(str(tmp_path))  # a local path: nothing to check
