"""jobs/t5_translation.py's pure parts: collate, scores, examples, Args, model state (no Ray)."""

from __future__ import annotations

import json

import pytest

from jobs import t5_translation as job
from orchestrator.data.text import Pair


def test_collate_pads_sources_and_ignores_padded_labels():
    ids, mask, labels = job.collate([([5, 6, 1], [7, 1]), ([5, 1], [8, 9, 10, 1])], pad_id=0)
    assert ids.tolist() == [[5, 6, 1], [5, 1, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert labels.tolist() == [[7, 1, -100, -100], [8, 9, 10, 1]]


def test_scores_exact_match_and_sacrebleu_ranges():
    refs = ["sept mille huit cent quarante-deux", "douze", "mille un"]
    perfect = job.scores(refs, refs)
    assert perfect["exact_match"] == 1.0 and perfect["chrf"] == pytest.approx(100.0)
    assert perfect["bleu"] == pytest.approx(100.0)  # corpus BLEU: needs some 4-grams somewhere
    some = job.scores(["sept mille huit cent quarante-trois", "douze", "mille"], refs)
    assert some["exact_match"] == pytest.approx(1 / 3)
    assert 0 < some["chrf"] < 100 and 0 < some["bleu"] < 100
    assert job.scores([], []) == {"bleu": 0.0, "chrf": 0.0, "exact_match": 0.0}


def test_examples_table_marks_exact_matches():
    pairs = [Pair("twelve", "douze"), Pair("one | two", "un")]
    text, md = job.examples_table(pairs, ["douze", "deux"], ["douze", "un"], n=5)
    assert "y/y" in text and "n/y" in text
    assert md.count("\n") == 4 and "one \\| two" in md


def test_args_reject_bad_values_and_shape_keys_exist():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        job.Args(d_model=0)
    with pytest.raises(ValidationError):
        job.DataArgs(format="xml")
    assert set(job.SHAPE_KEYS) <= set(job.Args.model_fields)


def test_model_state_records_config_and_tokenizer():
    from transformers import T5Config

    class M:
        config = T5Config(d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1, vocab_size=384)

    st = job.model_state(M(), job.Args(), None)
    assert st["tokenizer"] == {"kind": "byt5"} and st["t5_config"]["d_model"] == 16
    st = job.model_state(M(), job.Args(pretrained="/m/t5"), "/runs/x/tokenizer")
    assert st["tokenizer"] == {"kind": "pretrained", "source": "/m/t5", "dir": "/runs/x/tokenizer"}
    json.dumps(st)  # goes to state.json as it is
