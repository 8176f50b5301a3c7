"""Image classification with any torchvision model (ResNet-50 by default) on an image folder
or on Parquet shards streamed by Ray Data.

    python jobs/resnet_images.py --arch resnet18 --image-size 32 --epochs 3   # alone, no Ray
    orch run jobs/resnet_images.yaml                                   # Ray Train, 2 workers
    orch run jobs/resnet_images.yaml data.format=parquet               # shards via Ray Data
    orch run jobs/resnet_images.yaml train.arch=resnet50 data.image_size=224 \\
        data.path=/data/imagenet/train data.val_path=/data/imagenet/val precision=bf16
    orch run jobs/resnet_images.yaml resources.workers=8 resources.gpus_per_worker=1 \\
        strategy=fsdp train.compile=true
    orch run jobs/resnet_images.yaml strategy=pipeline train.arch=resnet18   # stages between
                                                       # the layer groups (pipeline_blocks)

Data (orchestrator.data): `data.format: folder` reads `path/<class>/*.jpg|png` with a
DataLoader; `data.format: parquet` reads shards written by `orch data pack` through Ray
Data. Without `data.path` a folder of coloured shapes is generated (offline) and used.
Either way each training image is seen exactly once per epoch across all workers, and its
augmentation is fixed by (seed, epoch, image). `train.weights` loads a local state_dict file
or a torchvision weights name found in torch's hub cache; nothing is downloaded.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

from pydantic import Field, field_validator

from orchestrator import worker
from orchestrator.data.args import ImageDataArgs
from orchestrator.data.augment import Augmenter
from orchestrator.data.images import DataError, folder_loader, folder_splits
from orchestrator.data.lockstep import empty_batch, merge_short_tail, synced_batches
from orchestrator.data.shards import (
    augment_collate,
    check_shards,
    ensure_default_data,
    exact_data_config,
    local_shard_batches,
    ray_image_dataset,
)
from orchestrator.worker import OptimArgs

SHAPE_KEYS = ("arch",)


class Args(OptimArgs):
    arch: str = Field(
        "resnet50",
        description="A torchvision classification model (resnet18, "
        "resnet50, convnext_tiny, efficientnet_b0, vit_b_16, ...).",
    )
    weights: str | None = Field(
        None,
        description="A state_dict file, or a torchvision weights "
        "name (DEFAULT, IMAGENET1K_V2) present in torch's hub cache.",
    )
    epochs: int = Field(10, ge=1, le=100_000, description="Passes over the training set.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Images per worker per step.")
    channels_last: bool = Field(True, description="NHWC memory format (faster convs on GPU).")
    compile: bool = Field(False, description="torch.compile the model.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing.")
    record_samples: bool = Field(
        False,
        description="Write the sample ids each worker trained "
        "on, per epoch, to run_dir/samples/ (an audit).",
    )

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        import torchvision.models as tvm

        known = tvm.list_models(module=tvm)
        if v not in known:
            import difflib

            guess = difflib.get_close_matches(v, known, n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else ""
            raise ValueError(
                f"expected a torchvision classification model{hint} "
                f"(e.g. resnet18, resnet50, convnext_tiny)"
            )
        return v


class DataArgs(ImageDataArgs):
    pass


# --- the model -------------------------------------------------------------------------------


def _weights_file(arch: str, weights: str) -> Path:
    """A local file, or the cache file of a torchvision weights enum name (never downloads)."""
    p = Path(weights).expanduser()
    if p.is_file():
        return p
    import torch
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(arch)
        w = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except (KeyError, ValueError):
        raise DataError(
            f"train.weights: {weights!r} is neither a file nor a weights name of {arch}"
        ) from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
    if not cached.is_file():
        raise DataError(
            f"train.weights: {arch} {w} is not in torch's cache ({cached}); nothing is "
            f"downloaded at run time: fetch {w.url} there once, or give a file path"
        )
    return cached


def build_model(args: Args, num_classes: int | None = None):
    """torchvision `arch` with `num_classes` outputs; `weights` loaded where shapes match
    (a pretrained 1000-class head is replaced by a fresh one). num_classes None (`orch plan`
    and validation, before any data is read): torchvision's 1000."""
    import torch
    import torchvision.models as tvm

    model = tvm.get_model(args.arch, weights=None, num_classes=num_classes or 1000)
    if args.weights:
        path = _weights_file(args.arch, args.weights)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        own = model.state_dict()
        keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        fresh = sorted(k for k in own if k not in keep)
        model.load_state_dict(keep, strict=False)
        print(
            f"[orch] {args.arch}: loaded {len(keep)} tensors from {path}"
            + (f"; new (random) {', '.join(fresh)}" if fresh else ""),
            flush=True,
        )
    return model


def pipeline_blocks(model):
    """A torchvision ResNet as a sequence for `strategy: pipeline`: stages start between the
    stem, the four layer groups and the head (the order of ResNet.forward)."""
    import torch.nn as nn

    if not all(hasattr(model, n) for n in ("conv1", "layer1", "layer4", "avgpool", "fc")):
        raise ValueError(
            f"{type(model).__name__}: only the ResNet family (resnet18 ... resnet152, "
            "resnext, wide_resnet) is cut into pipeline stages here; use ddp or fsdp"
        )
    return [
        ("stem", nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)),
        ("layer1", model.layer1),
        ("layer2", model.layer2),
        ("layer3", model.layer3),
        ("layer4", model.layer4),
        ("head", nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)),
    ]


def check_spec(data: dict, dirs) -> list:
    """Choices of this workload that a pipeline cannot take, named at validation."""
    from orchestrator.errors import FieldError

    if data.get("strategy") != "pipeline":
        return []
    errors = []
    if (data.get("data") or {}).get("format") == "parquet":
        errors.append(
            FieldError(
                "data.format",
                "strategy pipeline reads data.format: folder (Ray Data hands each worker its "
                "own shard; a pipeline's stages must see the same batches)",
                "parquet",
            )
        )
    if (data.get("train") or {}).get("compile"):
        errors.append(FieldError("train.compile", "expected false under strategy pipeline", "true"))
    return errors


# --- data sources ----------------------------------------------------------------------------


class Source:
    """Training and validation batches for this worker, from a folder or from shards."""

    def __init__(self, data: DataArgs, sess, batch_size: int):
        self.data, self.sess, self.bs = data, sess, batch_size
        seed = sess.seed
        self.train_aug = Augmenter(data, train=True, seed=seed)
        self.val_aug = Augmenter(data, train=False, seed=seed)
        if data.format == "folder":
            idx, train, val = folder_splits(data, seed)
            self.classes = idx.classes
            self.n_train, self.n_val = len(train), len(val)
            w, r = sess.data_world_size, sess.data_rank  # pipeline: a replica's stages alike
            self.train_loader, self.train_sampler = folder_loader(
                train, data, batch_size, r, w, seed, train=True
            )
            self.val_loader, self.val_sampler = (
                folder_loader(val, data, batch_size, r, w, seed, train=False)
                if val
                else (None, None)
            )
        else:
            _shards, self.classes, rows = check_shards(data.path)
            self.n_train = rows
            self.n_val = check_shards(data.val_path)[2] if data.val_path else None
            self.ray_shards = None
            if sess.in_ray:
                import ray.train

                try:
                    self.ray_shards = {
                        "train": ray.train.get_dataset_shard("train"),
                        "val": ray.train.get_dataset_shard("val"),
                    }
                except Exception as exc:  # noqa: BLE001
                    raise DataError(
                        "data.format: parquet needs the launcher to pass Ray Datasets "
                        f"(jobs.resnet_images.ray_datasets); got {type(exc).__name__}: {exc}"
                    ) from None

    def empty(self) -> dict:
        """A zero-weight batch for a worker that got no data this epoch (see synced_batches)."""
        return empty_batch(self.data.image_size)

    def steps_per_epoch(self) -> int:
        share = self.n_train * (1 - self._train_share_loss()) / self.sess.data_world_size
        per_worker = math.ceil(share)
        return max(1, math.ceil(per_worker / self.bs))

    def _train_share_loss(self) -> float:
        d = self.data
        return d.val_fraction if (d.format == "parquet" and not d.val_path) else 0.0

    def train_batches(self, epoch: int):
        d = self.data
        if d.format == "folder":
            self.train_sampler.set_epoch(epoch)
            return iter(self.train_loader)
        if self.ray_shards is not None:
            return iter(
                self.ray_shards["train"].iter_torch_batches(
                    batch_size=self.bs,
                    collate_fn=augment_collate(self.train_aug, epoch),
                    prefetch_batches=2,
                    local_shuffle_buffer_size=d.shuffle_buffer or None,
                    local_shuffle_seed=(self.sess.seed * 1_000_003 + epoch) * 64 + self.sess.rank
                    if d.shuffle_buffer
                    else None,
                )
            )
        split = None if d.val_path else "train"
        return local_shard_batches(
            d.path,
            d,
            self.train_aug,
            self.bs,
            epoch,
            split,
            self.sess.seed,
            self.sess.data_rank,
            self.sess.data_world_size,
        )

    def val_batches(self):
        d = self.data
        if d.format == "folder":
            return iter(self.val_loader) if self.val_loader is not None else iter(())
        if self.ray_shards is not None:
            return iter(
                self.ray_shards["val"].iter_torch_batches(
                    batch_size=self.bs,
                    collate_fn=augment_collate(self.val_aug, 0),
                    prefetch_batches=2,
                )
            )
        if d.val_path:
            return local_shard_batches(
                d.val_path,
                d,
                self.val_aug,
                self.bs,
                0,
                None,
                self.sess.seed,
                self.sess.data_rank,
                self.sess.data_world_size,
            )
        if d.val_fraction > 0:
            return local_shard_batches(
                d.path,
                d,
                self.val_aug,
                self.bs,
                0,
                "val",
                self.sess.seed,
                self.sess.data_rank,
                self.sess.data_world_size,
            )
        return iter(())


def ray_datasets(config: dict, scaling) -> dict | None:
    """Called by the launcher on the driver with the workers' config (the dict train_loop
    gets) and Ray's ScalingConfig: Ray Datasets for `data.format: parquet`.

    Returns {"train": ..., "val": ...} read from the shards (decoded, not augmented: the
    augmentation runs per epoch in each worker, keyed by (seed, epoch, image)), or None.
    """
    data = DataArgs.model_validate(config.get("data", {}))
    seed = int(config.get("seed", 0))
    if data.format != "parquet":
        return None
    import ray

    resources = ray.cluster_resources()
    total = resources.get("CPU", 0)
    taken = scaling.num_workers * (scaling.resources_per_worker or {}).get("CPU", 1.0)
    if total - taken < 1:
        # Ray Data's tasks get only what Train's workers leave; with none it waits forever.
        raise DataError(
            f"data.format: parquet needs at least 1 CPU beside the training workers for Ray "
            f"Data's read/decode tasks; this cluster has {total:g} CPUs and the workers take "
            f"{taken:g}. Lower resources.workers / cpus_per_worker, or use data.format: folder"
        )
    data = ensure_default_data(data)
    kw = {
        "workers": scaling.num_workers,
        "object_store_bytes": resources.get("object_store_memory", 0.0),
    }
    if data.val_path:
        return {
            "train": ray_image_dataset(data.path, data, shuffle_files=True, **kw),
            "val": ray_image_dataset(data.val_path, data, **kw),
        }
    return {
        "train": ray_image_dataset(data.path, data, "train", seed, shuffle_files=True, **kw),
        "val": ray_image_dataset(data.path, data, "val", seed, **kw),
    }


def ray_data_config(config: dict):
    """The DataConfig the launcher passes with ray_datasets(): exact (non-padding) splits."""
    return exact_data_config()


# --- the loop --------------------------------------------------------------------------------


def _to_input(x, sess, model_dtype, channels_last: bool):
    import torch

    x = x.to(sess.device, non_blocking=True)
    if model_dtype in (torch.bfloat16, torch.float16):  # DeepSpeed casts the model itself
        x = x.to(model_dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _model_dtype(model):
    try:
        return next(p.dtype for p in model.parameters())
    except StopIteration:
        import torch

        return torch.float32


def weighted_cross_entropy(logits, target, label_smoothing: float = 0.0):
    """Sum over the batch of cross-entropy x weight; target: [label, weight] per sample."""
    import torch.nn.functional as F

    per = F.cross_entropy(
        logits.float(), target[:, 0].long(), reduction="none", label_smoothing=label_smoothing
    )
    return (per * target[:, 1]).sum()


def evaluate(model, source: Source, sess, channels_last: bool) -> tuple[float, float]:
    """(accuracy, validation images counted) over every worker's share, in lockstep."""
    import torch

    model.eval()
    correct = seen = 0.0
    dtype = _model_dtype(model)
    with torch.no_grad():
        for batch, _total in synced_batches(source.val_batches(), sess, source.empty):
            x = _to_input(batch["image"], sess, dtype, channels_last)
            with sess.autocast():
                pred = model(x).argmax(dim=1).cpu()
            w = batch["weight"]
            correct += float(((pred == batch["label"]).float() * w).sum())
            seen += float(w.sum())
    model.train()
    correct, seen = sess.all_reduce_sum([correct, seen])
    return correct / max(seen, 1.0), seen


def train_loop(config: dict) -> dict:
    import torch

    args = Args.model_validate(config.get("train", {}))
    data = ensure_default_data(DataArgs.model_validate(config.get("data", {})))
    sess = worker.setup(config)
    source = Source(data, sess, args.batch_size)
    steps_per_epoch = source.steps_per_epoch()
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)

    model = build_model(args, len(source.classes))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model, _opt, _sched = sess.prepare(model, args, max(1, total_steps // args.grad_accum))
    fwd = torch.compile(model) if args.compile else model
    # The loss of a batch is a sum over its samples (weighted, scaled below), so the losses of
    # a pipeline's microbatches add up (train_step's reduction="sum"). One function for the run.
    loss_fn = functools.partial(weighted_cross_entropy, label_smoothing=args.label_smoothing)
    sess.set_progress(total_steps, metrics=("loss", "accuracy"))
    state = sess.restore() or {}
    step = int(state.get("step", 0))
    start_epoch = int(state.get("epochs_done", 0))
    # None until the first evaluation: rows leave it out (orch run shows `-`), no 0.0 point.
    acc = state.get("accuracy")
    loss_value = float("nan")
    bad_epoch = int(state.get("bad_samples", 0))
    last_ckpt = step
    dtype = _model_dtype(model)
    samples_dir = Path(sess.run_dir) / "samples" if (args.record_samples and sess.run_dir) else None
    if sess.is_main:
        print(
            f"[orch] {args.arch}: {len(source.classes)} classes, {source.n_train} training "
            f"images ({data.format}), ~{steps_per_epoch} steps/epoch x {args.epochs}",
            flush=True,
        )

    epoch = start_epoch
    for epoch in range(start_epoch, args.epochs):
        seen_ids: list[int] = []
        bad = 0
        loss_sum = n_sum = 0.0
        for batch, global_n in synced_batches(
            merge_short_tail(source.train_batches(epoch), max(2, args.batch_size // 2)),
            sess,
            source.empty,
        ):
            x = _to_input(batch["image"], sess, dtype, args.channels_last)
            y = batch["label"].to(sess.device)
            w = batch["weight"].to(sess.device)
            # Gradients are averaged over the data-parallel workers: scale so the step is the
            # mean over the real samples of all workers, however unevenly they are spread.
            scale = sess.data_world_size / max(global_n, 1.0)
            target = torch.stack([y.to(torch.float32), w * scale], dim=1)
            loss = sess.train_step(fwd, x, target, loss_fn, reduction="sum")
            step += 1
            loss_sum += float(loss) / scale  # this worker's sum of weighted sample losses
            n_sum += float(w.sum())
            bad += int(batch["bad"].sum())
            if samples_dir is not None and not batch.get("dummy"):
                seen_ids += batch["index"][batch["weight"] > 0].tolist()
            if step % args.log_every == 0:
                ls, ns = sess.all_reduce_sum([loss_sum, n_sum])
                loss_value = ls / max(ns, 1.0)
                sess.log(
                    {
                        "loss": loss_value,
                        "accuracy": acc,
                        "epoch": epoch,
                        **sess.throughput(step, args.batch_size),
                    },
                    step,
                )
            if args.max_steps and step >= args.max_steps:
                break
        ls, ns, bad_g = sess.all_reduce_sum([loss_sum, n_sum, float(bad)])
        loss_value = ls / max(ns, 1.0)
        bad_epoch = int(bad_g)  # the same files each epoch: report the count, not a running sum
        if samples_dir is not None:
            samples_dir.mkdir(parents=True, exist_ok=True)
            (samples_dir / f"train-epoch{epoch:03d}-rank{sess.rank}.json").write_text(
                json.dumps(seen_ids)
            )
        acc, val_seen = evaluate(fwd, source, sess, args.channels_last)
        metrics = {
            "loss": loss_value,
            "accuracy": acc,
            "epoch": epoch,
            "train_samples": ns,
            "val_samples": val_seen,
            "bad_samples": bad_epoch,
        }
        if bad_g and sess.is_main:
            print(
                f"[orch] epoch {epoch}: skipped {int(bad_g)} unreadable image(s) "
                "(data.on_bad: skip; named above)",
                flush=True,
            )
        done = args.max_steps and step >= args.max_steps
        if epoch + 1 < args.epochs and not done and step - last_ckpt >= sess.checkpoint_every:
            sess.save_checkpoint(
                step,
                metrics,
                state={"epochs_done": epoch + 1, "accuracy": acc, "bad_samples": bad_epoch},
            )
            last_ckpt = step
        else:
            sess.log(metrics, step)
        if done:
            break
    final = {"loss": loss_value, "accuracy": acc, "epoch": epoch, "bad_samples": bad_epoch}
    sess.finish(
        final, step, state={"epochs_done": args.epochs, "accuracy": acc, "bad_samples": bad_epoch}
    )
    return final


def main(argv: list[str] | None = None) -> None:
    from orchestrator.worker.standalone import run_alone

    result = run_alone(sys.modules[__name__], argv)
    acc = result.get("accuracy")
    print(f"validation accuracy: {'-' if acc is None else f'{acc:.4f}'}")


if __name__ == "__main__":
    main()
