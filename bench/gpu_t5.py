"""Training throughput and model FLOPs utilisation of a t5-base-sized T5 on one GPU, no Ray.

    python bench/gpu_t5.py                                 # t5-base shape, bf16, batch 32 x 512/128
    python bench/gpu_t5.py --compare-fp32                  # also fp32 (TF32 off), and the ratio
    python bench/gpu_t5.py --batch-size 64 --steps 30 --peak-tflops 989
    python bench/gpu_t5.py --smoke                         # tiny model, 3 steps, runs on CPU

The model is a randomly initialised T5ForConditionalGeneration with t5-base's shape (d_model
768, d_ff 3072, 12 heads of 64, 12 encoder + 12 decoder layers, 32,128-token vocabulary:
about 223M parameters), so nothing is downloaded. Each step is one AdamW step on random token
ids (source length --src-len, target length --tgt-len) under torch.autocast(bf16).

    tokens/step  = batch x (src_len + tgt_len)
    model FLOPs  = 6 x parameters x tokens      (the stated rule: 2 forward + 4 backward per
                                                  parameter per token; attention not counted)
    MFU          = model FLOPs per second / the GPU's dense bf16 peak

6 x params x tokens over-counts an encoder-decoder, where a source token only passes the
encoder and a target token only the decoder; the script also prints the split count
(6 x (encoder params x source tokens + decoder params x target tokens)) beside it, so both
readings are at hand. Peak: from the GPU name (H100/H200 989, A100 312, L40S 362, L4 121,
A10G 125 TFLOP/s dense bf16) or --peak-tflops.
"""

from __future__ import annotations

import argparse
import json
import time

PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
    "A10": 125.0,
    "V100": 125.0,
}
SIZES = {
    "base": dict(d_model=768, d_ff=3072, d_kv=64, num_heads=12, num_layers=12, vocab_size=32128),
    "small": dict(d_model=512, d_ff=2048, d_kv=64, num_heads=8, num_layers=6, vocab_size=32128),
    "tiny": dict(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, vocab_size=384),
}


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def measure(
    size: str,
    precision: str,
    batch: int,
    src_len: int,
    tgt_len: int,
    steps: int,
    warmup: int,
    device: str,
    compile_model: bool = False,
) -> dict:
    import contextlib

    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(**SIZES[size], decoder_start_token_id=0, dropout_rate=0.0)
    model = T5ForConditionalGeneration(cfg).to(device)
    params = sum(p.numel() for p in model.parameters())
    enc = sum(p.numel() for p in model.encoder.parameters())  # includes the shared embedding
    dec = sum(p.numel() for p in model.decoder.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    fwd = torch.compile(model) if compile_model else model
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(2, cfg.vocab_size, (batch, src_len), generator=g).to(device)
    labels = torch.randint(2, cfg.vocab_size, (batch, tgt_len), generator=g).to(device)
    mask = torch.ones_like(ids)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.cuda.reset_peak_memory_stats()
    ctx = (
        (lambda: torch.autocast(device_type=device, dtype=torch.bfloat16))
        if precision == "bf16"
        else contextlib.nullcontext
    )

    def step():
        with ctx():
            loss = fwd(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    dt = (time.perf_counter() - t0) / steps
    tokens = batch * (src_len + tgt_len)
    return {
        "size": size,
        "precision": precision,
        "params": params,
        "encoder_params": enc,
        "decoder_params": dec,
        "batch": batch,
        "src_len": src_len,
        "tgt_len": tgt_len,
        "step_s": dt,
        "tokens_per_s": tokens / dt,
        "model_tflops_per_s": 6 * params * tokens / dt / 1e12,
        "split_tflops_per_s": 6 * (enc * batch * src_len + dec * batch * tgt_len) / dt / 1e12,
        "loss": loss.item(),
        "max_mem_gib": (torch.cuda.max_memory_allocated() / 2**30) if device == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="base", choices=sorted(SIZES))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--src-len", type=int, default=512)
    ap.add_argument("--tgt-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compare-fp32", action="store_true", help="also measure fp32 (TF32 off)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 3 steps, CPU allowed")
    ap.add_argument("--json", default=None, help="also write the results here")
    ns = ap.parse_args(argv)

    import torch

    if ns.smoke:
        ns.size, ns.batch_size, ns.src_len, ns.tgt_len, ns.steps, ns.warmup = (
            "tiny",
            4,
            32,
            16,
            3,
            1,
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not ns.smoke:
        ap.error("no CUDA GPU here: run on a GPU machine, or pass --smoke for a CPU check")
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    peak = ns.peak_tflops or (peak_tflops(name) if device == "cuda" else None)
    print(f"device: {name}; torch {torch.__version__}; peak bf16 {peak or '?'} TFLOP/s")

    results = [
        measure(
            ns.size,
            "bf16",
            ns.batch_size,
            ns.src_len,
            ns.tgt_len,
            ns.steps,
            ns.warmup,
            device,
            ns.compile,
        )
    ]
    if ns.compare_fp32:
        results.append(
            measure(
                ns.size,
                "fp32",
                ns.batch_size,
                ns.src_len,
                ns.tgt_len,
                ns.steps,
                ns.warmup,
                device,
                ns.compile,
            )
        )
    r0 = results[0]
    print(
        f"T5 {ns.size}: {r0['params'] / 1e6:.1f}M parameters "
        f"(encoder {r0['encoder_params'] / 1e6:.1f}M, "
        f"decoder {r0['decoder_params'] / 1e6:.1f}M, shared embedding in both); "
        f"batch {ns.batch_size} x "
        f"({ns.src_len} + {ns.tgt_len}) tokens"
    )
    print(
        f"{'precision':<10}{'step s':>9}{'tokens/s':>12}{'TFLOP/s 6ND':>13}{'MFU 6ND':>9}"
        f"{'TFLOP/s split':>15}{'MFU split':>11}{'mem GiB':>9}"
    )
    for r in results:
        mfu = f"{100 * r['model_tflops_per_s'] / peak:.1f}%" if peak else "-"
        mfu_split = f"{100 * r['split_tflops_per_s'] / peak:.1f}%" if peak else "-"
        mem = f"{r['max_mem_gib']:.1f}" if r["max_mem_gib"] is not None else "-"
        print(
            f"{r['precision']:<10}{r['step_s']:>9.3f}{r['tokens_per_s']:>12,.0f}"
            f"{r['model_tflops_per_s']:>13.1f}{mfu:>9}{r['split_tflops_per_s']:>15.1f}{mfu_split:>11}{mem:>9}"
        )
        r["mfu"] = r["model_tflops_per_s"] / peak if peak else None
        r["device"] = name
    if len(results) > 1:
        print(
            f"bf16 / fp32 tokens/s: {results[0]['tokens_per_s'] / results[1]['tokens_per_s']:.2f}x"
        )
    if ns.json:
        with open(ns.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
