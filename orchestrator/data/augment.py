"""Augmentation and normalisation of training images: Keras' ImageDataGenerator, seeded, batched.

    aug = Augmenter(data, train=True, seed=0)   # data: an ImageDataArgs (args.py)
    xb = aug.batch(bases, indices, epoch)       # uint8 (N, S, S, 3) -> float32 (N, 3, s, s) torch
    ub = aug.batch_uint8(bases, indices, epoch) # the same before normalising: uint8 (N, 3, s, s)
    x = aug(base, index, epoch)                 # one image: uint8 HWC -> float32 CHW numpy
    aug.augment_uint8(base, index, epoch)       # one image before normalising, HWC (previews)
    aug.params(index, epoch)                    # the random draw: crop, angles, shifts, flips

Rotation, width/height shift, shear, zoom, horizontal/vertical flip and fill mode (constant,
nearest, reflect, wrap), plus random/centre crop and normalisation (S = data.base_size,
s = data.image_size). The random numbers come from (seed, epoch, sample index), so a sample
looks the same in a given epoch whichever worker, process, data path (folder or shards) or
batch it lands in. Validation (`train=False`) only centre-crops and normalises.

A whole batch is transformed at once, each image with its own parameters: the crop and flips
are one gather, and the affine map (Keras' rotation @ shift @ shear @ zoom about the centre,
bilinear) is one `torch.nn.functional.grid_sample` over per-image sampling grids, with the
fill mode applied to the coordinates; `torchvision.transforms.v2.functional` converts and
normalises. (torchvision's own `affine` takes one parameter set per call and fills only with
a constant, so it cannot do per-image draws with Keras' nearest/reflect/wrap fills in one
call.) Nothing in the result depends on the other images of the batch. This replaced
`scipy.ndimage.affine_transform` run per image and channel; bench/input_pipeline.py keeps
that path as its reference and measures both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from orchestrator.data.args import ImageDataArgs


def affine_matrix(
    h: int, w: int, theta: float, tx: float, ty: float, shear: float, zx: float, zy: float
):
    """Output->input pixel map (rows, cols), about the image centre; Keras' composition
    rotation @ shift @ shear @ zoom. Angles in radians, shifts in pixels."""
    import numpy as np

    rot = np.array(
        [[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]]
    )
    shift = np.array([[1, 0, ty], [0, 1, tx], [0, 0, 1]])
    shr = np.array([[1, -math.sin(shear), 0], [0, math.cos(shear), 0], [0, 0, 1]])
    zoom = np.array([[zy, 0, 0], [0, zx, 0], [0, 0, 1]])
    m = rot @ shift @ shr @ zoom
    cy, cx = (h - 1) / 2, (w - 1) / 2
    to_c = np.array([[1, 0, cy], [0, 1, cx], [0, 0, 1]])
    from_c = np.array([[1, 0, -cy], [0, 1, -cx], [0, 0, 1]])
    return to_c @ m @ from_c


def _flip_matrix(h: int, w: int, hflip: bool, vflip: bool):
    """Output (row, col) -> the (row, col) before the flips: flips folded into the sampling."""
    import numpy as np

    return np.array(
        [
            [-1.0 if vflip else 1.0, 0.0, (h - 1.0) if vflip else 0.0],
            [0.0, -1.0 if hflip else 1.0, (w - 1.0) if hflip else 0.0],
            [0.0, 0.0, 1.0],
        ]
    )


def _nhwc_uint8(bases):
    """A uint8 (N, S, S, 3) torch tensor from a numpy array, a list of HWC arrays or a tensor."""
    import numpy as np
    import torch

    if isinstance(bases, torch.Tensor):
        t = bases
    elif isinstance(bases, np.ndarray) and bases.dtype != object:
        if not bases.flags.writeable:  # a memory-mapped or Arrow-backed array: read, never written
            bases = bases.copy()
        t = torch.from_numpy(np.ascontiguousarray(bases))
    else:
        t = torch.from_numpy(np.stack([np.asarray(b) for b in bases]))
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {t.dtype} {tuple(t.shape)}")
    return t


def _reflect(x, n: int):
    """Keras/scipy 'reflect' (d c b a | a b c d | d c b a) of pixel coordinates, into (-1, n);
    the border clamp of grid_sample then finishes the half pixel at each edge."""
    import torch

    y = torch.remainder(x, 2 * n)
    return torch.where(y >= n, (2 * n - 1) - y, y)


class Augmenter:
    """base uint8 HWC -> normalised float32 CHW, with random augmentation when `train`.

    Randomness comes from numpy's Generator seeded by (seed, epoch, index): deterministic
    for a given seed, different each epoch, independent of which process asks and of which
    other images share the batch.
    """

    def __init__(self, data: ImageDataArgs, train: bool, seed: int = 0):
        import numpy as np

        self.aug, self.train, self.seed = data.augment, train, seed
        self.size, self.base, self.random_crop = data.image_size, data.base_size, data.random_crop
        self.mean = [float(m) for m in data.normalize.mean]
        self.std = [float(s) for s in data.normalize.std]
        # float32(mean) * 255 in float32, the constants the per-image path used
        f32 = np.float32
        self.mean255 = [float(f32(m) * f32(255.0)) for m in self.mean]
        self.std255 = [float(f32(s) * f32(255.0)) for s in self.std]

    def params(self, index: int, epoch: int) -> dict[str, Any]:
        import numpy as np

        a = self.aug
        rng = np.random.default_rng([self.seed, epoch, index])
        h = w = self.size

        def shift(r: float, n: int) -> float:
            if not r:
                return 0.0
            return (
                float(rng.uniform(-r, r) * n) if r < 1 else float(rng.integers(-int(r), int(r) + 1))
            )

        lo, hi = a.zoom_bounds()
        p = {
            "crop": (
                int(rng.integers(0, self.base - h + 1)),
                int(rng.integers(0, self.base - w + 1)),
            )
            if self.random_crop
            else ((self.base - h) // 2, (self.base - w) // 2),
            "theta": math.radians(rng.uniform(-a.rotation_range, a.rotation_range))
            if a.rotation_range
            else 0.0,
            "tx": shift(a.width_shift_range, w),
            "ty": shift(a.height_shift_range, h),
            "shear": math.radians(rng.uniform(-a.shear_range, a.shear_range))
            if a.shear_range
            else 0.0,
            "zx": float(rng.uniform(lo, hi)) if (lo, hi) != (1.0, 1.0) else 1.0,
            "zy": float(rng.uniform(lo, hi)) if (lo, hi) != (1.0, 1.0) else 1.0,
            "hflip": bool(a.horizontal_flip and rng.random() < 0.5),
            "vflip": bool(a.vertical_flip and rng.random() < 0.5),
        }
        return p

    # -- batches ---------------------------------------------------------------------------

    def batch_uint8(self, bases, indices: Sequence[int], epoch: int | Sequence[int]):
        """Crop + affine + flips of a batch: uint8 (N, S, S, 3) -> uint8 (N, 3, s, s) tensor.

        `indices` are the samples' stable ids; `epoch` one number or one per image."""
        import torch

        return self._pixels(bases, indices, epoch).to(torch.uint8)

    def batch(self, bases, indices: Sequence[int], epoch: int | Sequence[int]):
        """`batch_uint8`, then `/255` and `(x - mean) / std`: float32 (N, 3, s, s) tensor."""
        import torch
        import torchvision.transforms.v2.functional as TF

        x = self._pixels(bases, indices, epoch)
        if x.dtype == torch.uint8:
            x = TF.to_dtype(x, torch.float32, scale=False)
        # float with integer values 0..255 either way: (x / 255 - mean) / std in one pass
        return TF.normalize(x, self.mean255, self.std255, inplace=True)

    def _pixels(self, bases, indices: Sequence[int], epoch: int | Sequence[int]):
        """(N, 3, s, s): uint8 without an affine map, else float32 holding rounded 0..255."""
        import numpy as np
        import torch

        x = _nhwc_uint8(bases)
        n, h, w = x.shape[0], self.size, self.size
        if x.shape[1] != self.base or x.shape[2] != self.base:
            raise ValueError(
                f"expected {self.base}x{self.base} images (data.base_size), "
                f"got {x.shape[1]}x{x.shape[2]}"
            )
        if len(indices) != n:
            raise ValueError(f"{n} images but {len(indices)} indices")
        if not self.train or n == 0:
            top = (self.base - h) // 2
            return x[:, top : top + h, top : top + w].permute(0, 3, 1, 2).contiguous()
        epochs = [int(epoch)] * n if np.ndim(epoch) == 0 else [int(e) for e in epoch]
        ps = [self.params(int(i), e) for i, e in zip(indices, epochs, strict=True)]

        # the crop (and, without an affine map, the flips): a view per image, one copy
        affine = self.aug.is_affine()
        crops = []
        for i, p in enumerate(ps):
            top, left = p["crop"]
            c = x[i, top : top + h, left : left + w]
            if not affine and (p["hflip"] or p["vflip"]):
                c = c.flip([d for d, f in ((0, p["vflip"]), (1, p["hflip"])) if f])
            crops.append(c)
        x = torch.stack(crops).permute(0, 3, 1, 2)  # (N, 3, h, w) uint8
        if not affine:
            return x.contiguous()

        mats = np.stack(
            [
                affine_matrix(h, w, p["theta"], p["tx"], p["ty"], p["shear"], p["zx"], p["zy"])
                @ _flip_matrix(h, w, p["hflip"], p["vflip"])
                for p in ps
            ]
        )
        return self._warp(x, torch.from_numpy(mats))

    def _warp(self, x, mats):
        """Bilinear resampling of uint8 (N, 3, h, w) at mats @ (row, col, 1), per image."""
        import torch
        import torch.nn.functional as F

        n, _c, h, w = x.shape
        mats = mats.to(torch.float32)
        r = torch.arange(h, dtype=torch.float32)[None, :, None]
        c = torch.arange(w, dtype=torch.float32)[None, None, :]

        def m(i, j):
            return mats[:, i, j][:, None, None]

        # separable: a (N, h, 1) part plus a (N, 1, w) part, one full-size pass per coordinate
        src_r = (m(0, 0) * r + m(0, 2)) + m(0, 1) * c  # (N, h, w)
        src_c = (m(1, 0) * r + m(1, 2)) + m(1, 1) * c
        x = x.float()
        mode = self.aug.fill_mode
        hh, ww = h, w
        valid = None
        if mode == "wrap":  # periodic: one extra row/column holding row/column 0
            src_r, src_c = torch.remainder(src_r, h), torch.remainder(src_c, w)
            x = F.pad(x, (0, 1, 0, 1), mode="circular")
            hh, ww = h + 1, w + 1
        elif mode == "reflect":
            src_r, src_c = _reflect(src_r, h), _reflect(src_c, w)
        elif mode == "constant":  # cval outside the image, as scipy's 'constant'
            valid = (src_r >= 0) & (src_r <= h - 1) & (src_c >= 0) & (src_c <= w - 1)
        # nearest: grid_sample's border clamp is exactly it
        grid = torch.empty((n, h, w, 2), dtype=torch.float32)
        torch.mul(src_c, 2.0 / (ww - 1), out=grid[..., 0]).sub_(1.0)
        torch.mul(src_r, 2.0 / (hh - 1), out=grid[..., 1]).sub_(1.0)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
        if valid is not None:
            out = torch.where(valid[:, None], out, torch.tensor(float(self.aug.cval)))
        # a convex mix of 0..255 values: rounding is all it takes to land on uint8 levels
        return out.round_()

    # -- one image (previews, tests, code written for the per-image API) -------------------

    def augment_uint8(self, base, index: int, epoch: int):
        """Crop + affine + flips on uint8 HWC; returns uint8 HWC numpy (for previews)."""
        import numpy as np

        x = self.batch_uint8(base[None], [index], epoch)[0]
        return np.ascontiguousarray(x.permute(1, 2, 0).numpy())

    def __call__(self, base, index: int, epoch: int):
        return self.batch(base[None], [index], epoch)[0].numpy()
