"""T5 translation end to end: a tiny T5 on 2 Ray DDP workers learns, checkpoints, and
`orch translate` turns text into text with that checkpoint; a save_pretrained directory loads
through the job's pretrained path with the network cut off; resume continues a run (bf16)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.launch import launch
from orchestrator.plan import plan
from orchestrator.rundir import read_metrics
from orchestrator.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "train.d_model=32",
    "train.d_ff=64",
    "train.d_kv=16",
    "train.num_heads=2",
    "train.num_layers=1",
    "train.lr=3e-3",
    "train.warmup_steps=5",
    "train.batch_size=16",
    "train.max_new_tokens=24",
    "train.eval_batch_size=32",
    "data.max_number=199",
    "data.n_val=16",
    "data.n_test=16",
    "train.val_samples=8",
    "train.num_beams=2",
]


def test_two_workers_train_checkpoint_and_translate(ray_local, tmp_runs):
    spec = load_spec(
        ROOT / "jobs/t5_translation.yaml",
        [
            *TINY,
            "train.max_steps=40",
            "train.log_every=5",
            "train.eval_every=20",
            "checkpoint.every_steps=20",
            f"storage_path={tmp_runs}",
            "name=t5tiny",
            "resources.workers=2",
        ],
    )
    summary = launch(plan(spec))
    assert summary["status"] == "SUCCEEDED", summary["error"]
    m = summary["metrics"]
    assert m["step"] == 40 and m["test_pairs"] == 16
    for key in ("bleu", "chrf", "exact_match", "greedy_chrf", "beam_exact_match"):
        assert key in m
    run_dir = Path(summary["run_dir"])
    rows = [r for r in read_metrics(run_dir) if "loss" in r]
    assert rows[0]["step"] <= 5
    assert rows[-1]["loss"] < 0.75 * rows[0]["loss"], [r["loss"] for r in rows]  # from ~ln(384)
    assert rows[-1]["val_loss"] < rows[0]["loss"]
    ck = run_dir / "checkpoint_000040"
    assert (ck / "_COMPLETE").exists() and (run_dir / "checkpoint_000020" / "_COMPLETE").exists()
    state = json.loads((ck / "state.json").read_text())
    assert state["t5_config"]["d_model"] == 32 and state["tokenizer"] == {"kind": "byt5"}
    assert "greedy" in (run_dir / "examples.md").read_text()
    assert len((run_dir / "test_predictions.jsonl").read_text().splitlines()) == 16

    texts = ["one hundred and twelve", "forty-five", "seven"]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "translate",
            str(run_dir),
            *texts,
            "--beams",
            "2",
            "--batch-size",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(texts), out.stdout
    assert all(line.strip() for line in lines), f"empty translation in {lines!r}"
    assert any(c.isalpha() for c in out.stdout)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_save_pretrained_loads_through_the_pretrained_path_offline(tmp_path, no_network):
    import torch
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    from jobs import t5_translation as job
    from orchestrator.translate import load_translator

    src = tmp_path / "my-t5"
    torch.manual_seed(1)
    original = T5ForConditionalGeneration(
        T5Config(
            vocab_size=384,
            d_model=24,
            d_ff=48,
            d_kv=12,
            num_heads=2,
            num_layers=1,
            decoder_start_token_id=0,
        )
    )
    original.save_pretrained(src)
    ByT5Tokenizer().save_pretrained(src)

    args = job.Args(pretrained=str(src))
    loaded = job.build_model(args)
    assert loaded.config.d_model == 24
    a, b = original.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert type(job.build_tokenizer(str(src))).__name__.startswith("ByT5")

    # The job trains from it, records it, and translate rebuilds it from the run's tokenizer copy.
    run_dir = tmp_path / "run"
    result = job.train_loop(
        {
            "train": {
                **args.model_dump(),
                "max_steps": 3,
                "batch_size": 8,
                "val_samples": 4,
                "test_samples": 4,
                "num_beams": 1,
                "max_new_tokens": 8,
                "eval_every": 3,
            },
            "data": {"max_number": 60, "n_val": 8, "n_test": 8},
            "seed": 0,
            "run_dir": str(run_dir),
            "checkpoint": {"every_steps": 100},
        }
    )
    assert result["test_pairs"] == 4
    state = json.loads((run_dir / "checkpoint_000003" / "state.json").read_text())
    assert state["tokenizer"]["kind"] == "pretrained" and state["tokenizer"]["source"] == str(src)
    assert (run_dir / "tokenizer").is_dir()
    tr = load_translator(run_dir)
    assert tr.model.config.d_model == 24
    assert len(tr.translate(["twelve", "three"], beams=1, max_new_tokens=4)) == 2


def test_resume_continues_from_the_checkpoint_in_bf16(tmp_path):
    """Alone (no Ray): 6 steps, then the same run asked for 10 resumes at 6 and ends at 10."""
    from jobs import t5_translation as job

    train = {
        "d_model": 16,
        "d_ff": 32,
        "d_kv": 8,
        "num_heads": 2,
        "num_layers": 1,
        "batch_size": 8,
        "val_samples": 2,
        "test_samples": 2,
        "num_beams": 1,
        "max_new_tokens": 4,
        "eval_every": 3,
        "log_every": 1,
    }
    base = {
        "data": {"max_number": 60, "n_val": 4, "n_test": 4},
        "seed": 0,
        "precision": "bf16",
        "run_dir": str(tmp_path),
        "checkpoint": {"every_steps": 3},
    }
    job.train_loop({**base, "train": {**train, "max_steps": 6}})
    first = json.loads((tmp_path / "checkpoint_000006" / "state.json").read_text())
    assert first["step"] == 6 and first["cpu_s"] > 0
    job.train_loop(
        {
            **base,
            "train": {**train, "max_steps": 10},
            "resume_from": str(tmp_path / "checkpoint_000006"),
        }
    )
    second = json.loads((tmp_path / "checkpoint_000010" / "state.json").read_text())
    assert second["step"] == 10 and second["optimizer_steps"] == 10
    assert second["cpu_s"] > first["cpu_s"]
    steps = [r["step"] for r in read_metrics(tmp_path) if "loss" in r and "checkpoint" not in r]
    assert steps == sorted(set(steps)), "resumed steps are not logged twice"
