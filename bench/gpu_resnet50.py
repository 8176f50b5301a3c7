"""ResNet-50 training images/s on one GPU, no Ray: bf16 autocast, channels-last, with and
without torch.compile, synthetic data already on the device, warm-up, median of timed steps.

    python bench/gpu_resnet50.py                                   # GPU: batch 256, 224 px
    python bench/gpu_resnet50.py --batch 256 --steps 30 --warmup 10 --compile both
    python bench/gpu_resnet50.py --device cpu --batch 4 --image-size 64 --steps 2 --warmup 1 \\
        --compile off                                              # smoke test on a CPU box

Published anchor: NVIDIA's DeepLearningExamples report about 2,470 img/s for ResNet-50 v1.5
training on one A100-80GB in mixed precision (TF32/AMP, DALI input, batch 256). This script
measures the model step alone (no input pipeline), so it is an upper bound for a real job.
Prints one line per mode and the compile/eager ratio; --json writes the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

ANCHOR_A100_IMG_S = 2470


def bench(
    device: str,
    batch: int,
    size: int,
    steps: int,
    warmup: int,
    compiled: bool,
    precision: str,
    channels_last: bool,
) -> dict:
    import torch
    import torch.nn.functional as F
    import torchvision

    torch.manual_seed(0)
    dev = torch.device(device)
    model = torchvision.models.resnet50(num_classes=1000).to(dev)
    mf = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=mf)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-5)
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=mf)
    y = torch.randint(0, 1000, (batch,), device=dev)
    fwd = torch.compile(model) if compiled else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def step():
        if dtype is not None:
            with torch.autocast(device_type=dev.type, dtype=dtype):
                out = fwd(x)
        else:
            out = fwd(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {
        "mode": "compile" if compiled else "eager",
        "img_s": batch / med,
        "median_step_s": med,
        "warmup_s": warm_s,
        "steps": steps,
        "batch": batch,
        "image_size": size,
        "precision": precision,
        "channels_last": channels_last,
        "max_mem_gib": (torch.cuda.max_memory_allocated() / 2**30) if dev.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30, help="timed steps (median reported)")
    p.add_argument(
        "--warmup", type=int, default=10, help="untimed steps first (compile happens here)"
    )
    p.add_argument("--compile", choices=["both", "on", "off"], default="both")
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA GPU here; use --device cpu for a smoke run")
    name = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu"
    if a.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    modes = {"both": [False, True], "on": [True], "off": [False]}[a.compile]
    results = []
    print(
        f"ResNet-50 training, {name}, batch {a.batch}, {a.image_size} px, {a.precision}, "
        f"{'NCHW' if a.no_channels_last else 'channels-last'}, synthetic data on device"
    )
    for compiled in modes:
        r = bench(
            a.device,
            a.batch,
            a.image_size,
            a.steps,
            a.warmup,
            compiled,
            a.precision,
            not a.no_channels_last,
        )
        r["device"] = name
        results.append(r)
        mem = f", peak {r['max_mem_gib']:.1f} GiB" if r["max_mem_gib"] else ""
        print(
            f"  {r['mode']:>7}: {r['img_s']:9.2f} img/s  "
            f"(median step {r['median_step_s'] * 1e3:.1f} ms "
            f"over {a.steps}; warm-up {r['warmup_s']:.1f} s{mem})",
            flush=True,
        )
    if len(results) == 2:
        print(f"  compile / eager: {results[1]['img_s'] / results[0]['img_s']:.2f}x")
    if a.device.startswith("cuda") and a.image_size == 224:
        best = max(r["img_s"] for r in results)
        print(
            f"  vs NVIDIA's A100-80GB anchor ({ANCHOR_A100_IMG_S} img/s): "
            f"{best / ANCHOR_A100_IMG_S:.2f}x"
        )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
