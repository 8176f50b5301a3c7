"""Image folders (`class_name/*.jpg|png`) read by a torch DataLoader, and the errors of bad data.

    idx = scan_folder("data/shapes/train")          # classes, samples (sorted: stable ids)
    idx, train, val = folder_splits(data, seed)     # val_path, or val_fraction held out by hash
    loader, sampler = folder_loader(train, data, batch_size, rank, world, seed, train=True)
    sampler.set_epoch(epoch)                        # then: batches of image, label, index,
    for batch in loader: ...                        #       weight (0: a skipped file), bad

The layout is Keras' flow_from_directory / torchvision's ImageFolder. `ShardSampler` hands each
worker a disjoint slice of one seeded permutation per epoch, with no padding, so each image is
seen exactly once per epoch across all workers (workers may then differ by one sample:
lockstep.py keeps them in step). `decode_image` and `base_array` (decode, then resize the
shorter side and centre-crop to `data.base_size`) are shared with the Parquet path (shards.py).

Bad data is named: an unreadable or truncated image is skipped and counted (`on_bad: skip`,
with a warning naming the file, and weight 0 in its batch) or fails the job (`on_bad: fail`,
BadImageError); an empty class folder is a DataError that names the folder.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.data.args import ImageDataArgs
from orchestrator.data.augment import Augmenter
from orchestrator.errors import ExitCode, OrchestratorError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class DataError(OrchestratorError):
    """Data that cannot be used: names the file or folder and what was expected."""

    exit_code = ExitCode.DATA


class BadImageError(DataError):
    """One image that cannot be decoded (unreadable, truncated, not an image)."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: cannot decode image ({reason})")


# -- folders -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    file: str  # absolute path
    label: int
    index: int  # position in the folder's sorted listing: a stable id
    rel: str  # class/name, for hashing and messages


@dataclass
class FolderIndex:
    root: str
    classes: list[str]
    samples: list[Sample]
    ignored: list[str] = field(default_factory=list)  # files that are not images by extension

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for s in self.samples:
            out[self.classes[s.label]] += 1
        return out


def scan_folder(root: str | Path) -> FolderIndex:
    """List `root/<class>/<image>`; classes and files sorted, so indexes are stable."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected a folder with one sub-folder per class)")
    class_dirs = sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )
    if not class_dirs:
        raise DataError(
            f"{root}: no class folders (expected {root}/<class_name>/<image>.jpg|png, the layout "
            "of Keras' flow_from_directory / torchvision's ImageFolder)"
        )
    classes, samples, ignored = [], [], []
    for label, d in enumerate(class_dirs):
        files = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        ignored += [str(p) for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images:
            raise DataError(
                f"{d}: empty class folder (no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS[:3])} "
                "files); add images or remove the folder"
            )
        classes.append(d.name)
        for p in images:
            samples.append(
                Sample(str(p.resolve()), label, len(samples), f"{d.name}/{p.relative_to(d)}")
            )
    return FolderIndex(str(root.resolve()), classes, samples, ignored)


def stable_fraction(key: str, seed: int = 0) -> float:
    """A number in [0, 1) fixed by (key, seed): the same on every machine and run."""
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def holdout(rel: str, fraction: float, seed: int = 0) -> bool:
    return fraction > 0 and stable_fraction(rel, seed) < fraction


# -- decoding ----------------------------------------------------------------------------------


def decode_image(data: bytes | str, where: str | None = None):
    """Bytes or a file path -> an RGB PIL image, fully loaded. Raises BadImageError."""
    from PIL import Image

    where = where or (data if isinstance(data, str) else "<bytes>")
    try:
        src = open(data, "rb") if isinstance(data, str) else io.BytesIO(data)  # noqa: SIM115
        with src, Image.open(src) as img:
            img.load()  # lazy decoders only notice truncation here
            return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError...
        msg = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>|'[^']*'", "it", str(exc))
        raise BadImageError(str(where), f"{type(exc).__name__}: {msg}") from None


def base_array(img, size: int):
    """Shorter side -> `size`, centre crop to size x size; uint8 HWC. What shards decode to."""
    import numpy as np
    from PIL import Image

    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def warn_bad(path: str, reason: str) -> None:
    print(f"[orch data] skipping unreadable image {path}: {reason}", file=sys.stderr, flush=True)


# -- the DataLoader path (no torch import at module level) -------------------------------------


class ImageFolderDataset:
    """Map-style dataset over `samples`. Keys are (position, epoch) pairs from ShardSampler.

    The DataLoader asks for a whole batch at once (`__getitems__`): each image is decoded,
    then the batch is augmented in one go (Augmenter.batch, each image with its own draw), and
    the result is already the batch dict `collate` passes on: "image" float32 (N, 3, s, s),
    "label", "index", "weight" (0 for a skipped bad file), "bad" (1 for a skipped bad file).
    `ds[key]` gives one item, the same numbers as in any batch, with "image" float32 CHW numpy.
    """

    def __init__(self, samples: list[Sample], data: ImageDataArgs, train: bool, seed: int = 0):
        self.samples, self.data = samples, data
        self.augment = Augmenter(data, train, seed)

    def __len__(self) -> int:
        return len(self.samples)

    def _base(self, s: Sample):
        """(uint8 HWC at base_size, bad): a skipped bad file is a blank image, named."""
        import numpy as np

        try:
            return base_array(decode_image(s.file), self.data.base_size), 0
        except BadImageError as exc:
            if self.data.on_bad == "fail":
                raise
            warn_bad(s.file, exc.reason)
            return np.zeros((self.data.base_size, self.data.base_size, 3), np.uint8), 1

    def __getitems__(self, keys) -> dict:
        import numpy as np
        import torch

        keys = [k if isinstance(k, tuple) else (k, 0) for k in keys]
        samples = [self.samples[pos] for pos, _ in keys]
        decoded = [self._base(s) for s in samples]
        b = self.data.base_size
        bases = np.stack([d[0] for d in decoded]) if decoded else np.zeros((0, b, b, 3), np.uint8)
        indices = [s.index for s in samples]
        bad = [d[1] for d in decoded]
        return {
            "image": self.augment.batch(bases, indices, [e for _, e in keys]),
            "label": torch.tensor([s.label for s in samples], dtype=torch.int64),
            "index": torch.tensor(indices, dtype=torch.int64),
            "weight": torch.tensor([0.0 if x else 1.0 for x in bad], dtype=torch.float32),
            "bad": torch.tensor(bad, dtype=torch.int64),
        }

    def __getitem__(self, key):
        one = self.__getitems__([key])
        return {
            "image": one["image"][0].numpy(),
            "label": int(one["label"][0]),
            "index": int(one["index"][0]),
            "weight": float(one["weight"][0]),
            "bad": int(one["bad"][0]),
        }


class ShardSampler:
    """Yields (position, epoch) keys: rank r takes perm[r::world] of this epoch's permutation.

    Unlike torch's DistributedSampler it never pads with repeats, so the union over ranks is
    every position exactly once; ranks may differ by one sample (see synced_batches).
    """

    def __init__(self, n: int, rank: int = 0, world: int = 1, seed: int = 0, shuffle: bool = True):
        self.n, self.rank, self.world, self.seed, self.shuffle = n, rank, world, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def positions(self) -> list[int]:
        import numpy as np

        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            if self.shuffle
            else np.arange(self.n)
        )
        return order[self.rank :: self.world].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(p, self.epoch) for p in self.positions()])

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def collate(items) -> dict:
    """DataLoader collate_fn: a batch from `ImageFolderDataset.__getitems__` (already a dict)
    passes through; a list of single items (`ds[key]`, e.g. from a custom fetch) is stacked."""
    import numpy as np
    import torch

    if isinstance(items, dict):
        return items
    return {
        "image": torch.from_numpy(np.stack([it["image"] for it in items])),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
        "weight": torch.tensor([it["weight"] for it in items], dtype=torch.float32),
        "bad": torch.tensor([it["bad"] for it in items], dtype=torch.int64),
    }


def folder_splits(
    data: ImageDataArgs, seed: int = 0
) -> tuple[FolderIndex, list[Sample], list[Sample]]:
    """(index of path, train samples, val samples) for format: folder."""
    idx = scan_folder(data.path)
    if data.val_path:
        val_idx = scan_folder(data.val_path)
        if val_idx.classes != idx.classes:
            raise DataError(
                f"{data.val_path}: classes {val_idx.classes} differ from "
                f"{data.path}'s {idx.classes}"
            )
        return idx, idx.samples, val_idx.samples
    train = [s for s in idx.samples if not holdout(s.rel, data.val_fraction, seed)]
    val = [s for s in idx.samples if holdout(s.rel, data.val_fraction, seed)]
    return idx, train, val


def folder_loader(
    samples: list[Sample],
    data: ImageDataArgs,
    batch_size: int,
    rank: int,
    world: int,
    seed: int,
    train: bool,
):
    """A DataLoader over this rank's share of `samples`; returns (loader, sampler)."""
    from torch.utils.data import DataLoader

    ds = ImageFolderDataset(samples, data, train=train, seed=seed)
    sampler = ShardSampler(len(samples), rank, world, seed, shuffle=train)
    nw = data.loader_workers
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=nw,
        persistent_workers=nw > 0,
        prefetch_factor=4 if nw > 0 else None,
    )
    return loader, sampler
