"""orchestrator.compress.checkpoint: what a user is told about a path that is not a checkpoint."""

from __future__ import annotations

import pytest

from orchestrator.compress.checkpoint import load_checkpoint


def test_checkpoint_errors_are_clear(tmp_path):
    from orchestrator.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="checkpoint_NNNNNN"):
        load_checkpoint(tmp_path / "run")
    half = tmp_path / "run" / "checkpoint_000010"
    half.mkdir()
    (half / "model.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(half)
