"""Augmentation and normalisation of training images: Keras' ImageDataGenerator, seeded.

    aug = Augmenter(data, train=True, seed=0)   # data: an ImageDataArgs (args.py)
    x = aug(base, index, epoch)                 # uint8 HWC at data.base_size -> float32 CHW
    aug.augment_uint8(base, index, epoch)       # the same, before normalising (for previews)
    aug.params(index, epoch)                    # the random draw: crop, angles, shifts, flips

Rotation, width/height shift, shear, zoom, horizontal/vertical flip and fill mode (constant,
nearest, reflect, wrap; scipy.ndimage underneath, as Keras did), plus random/centre crop and
normalisation. The random numbers come from (seed, epoch, sample index), so a sample looks the
same in a given epoch whichever worker, process or data path (folder or shards) reads it.
Validation (`train=False`) only centre-crops and normalises.
"""

from __future__ import annotations

import math
from typing import Any

from orchestrator.data.args import ImageDataArgs

_SCIPY_MODE = {
    "constant": "constant",
    "nearest": "nearest",
    "reflect": "reflect",
    "wrap": "grid-wrap",
}


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


class Augmenter:
    """base uint8 HWC -> normalised float32 CHW, with random augmentation when `train`.

    Randomness comes from numpy's Generator seeded by (seed, epoch, index): deterministic
    for a given seed, different each epoch, independent of which process asks.
    """

    def __init__(self, data: ImageDataArgs, train: bool, seed: int = 0):
        import numpy as np

        self.aug, self.train, self.seed = data.augment, train, seed
        self.size, self.base, self.random_crop = data.image_size, data.base_size, data.random_crop
        self.mean = np.array(data.normalize.mean, dtype=np.float32).reshape(3, 1, 1) * 255.0
        self.std = np.array(data.normalize.std, dtype=np.float32).reshape(3, 1, 1) * 255.0

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

    def augment_uint8(self, base, index: int, epoch: int):
        """Crop + affine + flips on uint8 HWC; returns uint8 HWC (for previews)."""
        import numpy as np

        h = w = self.size
        if not self.train:
            top, left = (self.base - h) // 2, (self.base - w) // 2
            return np.ascontiguousarray(base[top : top + h, left : left + w])
        p = self.params(index, epoch)
        top, left = p["crop"]
        x = base[top : top + h, left : left + w]
        if self.aug.is_affine():
            from scipy import ndimage

            m = affine_matrix(h, w, p["theta"], p["tx"], p["ty"], p["shear"], p["zx"], p["zy"])
            x = np.stack(
                [
                    ndimage.affine_transform(
                        x[..., c].astype(np.float32),
                        m[:2, :2],
                        offset=m[:2, 2],
                        order=1,
                        mode=_SCIPY_MODE[self.aug.fill_mode],
                        cval=self.aug.cval,
                    )
                    for c in range(x.shape[2])
                ],
                axis=-1,
            )
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if p["hflip"]:
            x = x[:, ::-1]
        if p["vflip"]:
            x = x[::-1]
        return np.ascontiguousarray(x)

    def __call__(self, base, index: int, epoch: int):
        import numpy as np

        x = self.augment_uint8(base, index, epoch)
        chw = np.transpose(x, (2, 0, 1)).astype(np.float32)
        return (chw - self.mean) / self.std
