"""Which checkpoint a restarted worker group resumes from (orchestrator/worker/checkpoint.py).

Ray's controller registers a reported checkpoint only at its next poll of the worker; a node
lost between the upload and that poll leaves Ray offering the one before. The run directory
is the record, so a newer complete checkpoint there wins."""

from __future__ import annotations

import json
from types import SimpleNamespace

from orchestrator import rundir
from orchestrator.worker import checkpoint as ckpt


def _checkpoint(run_dir, step: int, complete: bool = True) -> None:
    d = run_dir / rundir.checkpoint_name(step)
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(b"x")
    if complete:
        (d / rundir.COMPLETE_MARKER).write_text(json.dumps({"files": ["model.pt"]}))


def _sess(run_dir, is_main: bool = True):
    return SimpleNamespace(
        is_main=is_main, run_dir=str(run_dir), all_gather_object=lambda obj: [obj]
    )


def test_a_newer_complete_checkpoint_in_the_run_dir_wins(tmp_path, capsys):
    _checkpoint(tmp_path, 32)
    _checkpoint(tmp_path, 64)
    got = ckpt._newer_in_storage(_sess(tmp_path), rundir.checkpoint_name(32))
    assert got == str(tmp_path / "checkpoint_000064")
    assert "Ray offered checkpoint_000032; resuming from the newer" in capsys.readouterr().out


def test_an_incomplete_newer_one_does_not(tmp_path):
    _checkpoint(tmp_path, 32)
    _checkpoint(tmp_path, 64, complete=False)  # the node died while it was written
    assert ckpt._newer_in_storage(_sess(tmp_path), rundir.checkpoint_name(32)) is None


def test_rays_choice_stands_when_it_is_the_newest(tmp_path):
    _checkpoint(tmp_path, 32)
    _checkpoint(tmp_path, 64)
    assert ckpt._newer_in_storage(_sess(tmp_path), rundir.checkpoint_name(64)) is None


def test_every_rank_takes_rank_0s_answer(tmp_path):
    _checkpoint(tmp_path, 32)
    _checkpoint(tmp_path, 64)
    # A rank other than 0 does not look; it takes what rank 0 gathered.
    sess = _sess(tmp_path, is_main=False)
    sess.all_gather_object = lambda obj: ["from-rank-0", obj]
    assert ckpt._newer_in_storage(sess, rundir.checkpoint_name(32)) == "from-rank-0"
