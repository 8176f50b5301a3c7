"""orchestrator/translate.py without a model: where `orch translate` takes its texts from."""

from __future__ import annotations

import pytest

from orchestrator.translate import TranslateInputError, read_texts


def test_read_texts_from_arguments_and_file(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("one\n\n  two  \n")
    assert read_texts(["zero"], str(f)) == ["zero", "one", "two"]
    with pytest.raises(TranslateInputError, match="nothing to translate"):
        read_texts([], None)
    with pytest.raises(TranslateInputError, match="--file"):
        read_texts([], str(tmp_path / "missing.txt"))
