"""orchestrator.data.augment: seeded Keras-style augmentation, batched: each image keeps its
(seed, epoch, index) draw whichever batch it is in; the geometry; agreement with scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orchestrator.data.augment import Augmenter
from tests.unit.data_fixtures import image_args


def test_augment_is_deterministic_per_seed_epoch_and_index():
    base = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    d = image_args(
        resize=20,
        random_crop=True,
        augment={
            "rotation_range": 30,
            "width_shift_range": 0.2,
            "height_shift_range": 2,
            "shear_range": 10,
            "zoom_range": 0.2,
            "horizontal_flip": True,
            "fill_mode": "reflect",
        },
    )
    aug = Augmenter(d, train=True, seed=7)
    x = aug(base, index=3, epoch=1)
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    assert np.array_equal(x, Augmenter(d, train=True, seed=7)(base, 3, 1))
    assert not np.array_equal(x, aug(base, 3, 2))  # another epoch
    assert not np.array_equal(x, Augmenter(d, train=True, seed=8)(base, 3, 1))  # another seed
    val = Augmenter(d, train=False, seed=7)
    assert np.array_equal(val(base, 3, 1), val(base, 3, 2))  # validation: no randomness


def test_augment_params_respect_ranges():
    d = image_args(
        augment={
            "rotation_range": 10,
            "width_shift_range": 0.25,
            "zoom_range": [0.8, 0.9],
            "horizontal_flip": True,
        }
    )
    aug = Augmenter(d, train=True)
    ps = [aug.params(i, 0) for i in range(200)]
    assert max(abs(p["theta"]) for p in ps) <= np.radians(10) + 1e-9
    assert max(abs(p["tx"]) for p in ps) <= 0.25 * 16 and all(p["ty"] == 0 for p in ps)
    assert all(0.8 <= p["zx"] <= 0.9 for p in ps)
    flips = sum(p["hflip"] for p in ps)
    assert 60 < flips < 140 and not any(p["vflip"] for p in ps)


@pytest.mark.parametrize("mode", ["constant", "nearest", "reflect", "wrap"])
def test_fill_modes_differ_where_the_image_moves_out(mode):
    base = np.zeros((16, 16, 3), np.uint8)
    base[:, :8] = 200  # left half bright
    d = image_args(augment={"width_shift_range": 6, "fill_mode": mode, "cval": 50})
    aug = Augmenter(d, train=True)
    # find an index whose shift is large, then check the fill
    i = next(i for i in range(100) if abs(aug.params(i, 0)["tx"]) >= 5)
    tx = aug.params(i, 0)["tx"]
    out = aug.augment_uint8(base, i, 0)
    edge = out[:, -1, 0] if tx > 0 else out[:, 0, 0]  # the column filled from outside
    expected = {
        "constant": 50,
        "nearest": 0 if tx > 0 else 200,
        "wrap": 200 if tx > 0 else 0,
        "reflect": 0 if tx > 0 else 200,
    }[mode]
    assert int(np.median(edge)) == expected


def test_flip_exact():
    base = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    d = image_args(augment={"horizontal_flip": True})
    aug = Augmenter(d, train=True)
    i = next(i for i in range(50) if aug.params(i, 0)["hflip"])
    assert np.array_equal(aug.augment_uint8(base, i, 0), base[:, ::-1])


# -- batched augmentation (issue 23) ------------------------------------------------------------

FULL = {
    "rotation_range": 30,
    "width_shift_range": 0.2,
    "height_shift_range": 2,
    "shear_range": 10,
    "zoom_range": 0.2,
    "horizontal_flip": True,
    "vertical_flip": True,
}


def _bases(n: int, size: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["constant", "nearest", "reflect", "wrap"])
@pytest.mark.parametrize("augment", [FULL, {"horizontal_flip": True, "vertical_flip": True}])
def test_an_image_is_augmented_the_same_whatever_batch_it_lands_in(mode, augment):
    d = image_args(resize=20, random_crop=True, augment={**augment, "fill_mode": mode, "cval": 9})
    aug = Augmenter(d, train=True, seed=3)
    bases, ids = _bases(11), [5, 40, 3, 17, 8, 2, 99, 61, 7, 1000, 12]
    whole = aug.batch(bases, ids, 4)
    whole_u8 = aug.batch_uint8(bases, ids, 4)
    # alone, in other batches, other positions, other batch sizes, next to other epochs
    for i in range(11):
        assert torch.equal(aug.batch(bases[i : i + 1], [ids[i]], 4)[0], whole[i])
        assert np.array_equal(aug(bases[i], ids[i], 4), whole[i].numpy())
        assert np.array_equal(aug.augment_uint8(bases[i], ids[i], 4), whole_u8[i].permute(1, 2, 0))
    order = [10, 3, 0, 7, 1]
    part = aug.batch(bases[order], [ids[i] for i in order], [4, 4, 4, 4, 4])
    for k, i in enumerate(order):
        assert torch.equal(part[k], whole[i])
    mixed = aug.batch(bases[[2, 2, 6]], [ids[2], ids[2], ids[6]], [4, 5, 4])
    assert torch.equal(mixed[0], whole[2]) and torch.equal(mixed[2], whole[6])
    assert torch.equal(mixed[1], aug.batch(bases[2:3], [ids[2]], 5)[0])
    # the draw is the (seed, epoch, index) one: another epoch or seed moves the image
    assert not torch.equal(mixed[1], mixed[0])
    assert not torch.equal(Augmenter(d, train=True, seed=4).batch(bases, ids, 4), whole)
    assert torch.equal(Augmenter(d, train=True, seed=3).batch(bases, ids, 4), whole)


def test_batch_shapes_dtypes_and_validation():
    d = image_args(resize=20, random_crop=True, augment=FULL)
    bases, ids = _bases(5), list(range(5))
    aug = Augmenter(d, train=True, seed=0)
    x, u = aug.batch(bases, ids, 0), aug.batch_uint8(bases, ids, 0)
    assert x.shape == (5, 3, 16, 16) and x.dtype == torch.float32 and x.is_contiguous()
    assert u.shape == (5, 3, 16, 16) and u.dtype == torch.uint8
    mean = torch.tensor(d.normalize.mean).view(1, 3, 1, 1)
    std = torch.tensor(d.normalize.std).view(1, 3, 1, 1)
    assert torch.allclose(x, (u.float() / 255 - mean) / std, atol=1e-6)
    # from a list of HWC arrays or a torch tensor: the same
    assert torch.equal(aug.batch(list(bases), ids, 0), x)
    assert torch.equal(aug.batch(torch.from_numpy(bases), ids, 0), x)
    empty = aug.batch(np.zeros((0, 20, 20, 3), np.uint8), [], 0)
    assert empty.shape == (0, 3, 16, 16) and empty.dtype == torch.float32
    val = Augmenter(d, train=False, seed=0)
    v = val.batch_uint8(bases, ids, 0)
    assert torch.equal(v, torch.from_numpy(bases[:, 2:18, 2:18]).permute(0, 3, 1, 2))
    assert torch.equal(val.batch(bases, ids, 0), val.batch(bases, ids, 7))  # no randomness
    with pytest.raises(ValueError, match="base_size"):
        aug.batch(_bases(2, size=18), [0, 1], 0)
    with pytest.raises(ValueError, match="uint8"):
        aug.batch(bases.astype(np.float32), ids, 0)


class _Fixed(Augmenter):
    """An Augmenter whose draws are given: to check the geometry itself."""

    table: dict = {}

    def params(self, index, epoch):
        return self.table[index]


def _p(**kw):
    return {
        "crop": (0, 0),
        "theta": 0.0,
        "tx": 0.0,
        "ty": 0.0,
        "shear": 0.0,
        "zx": 1.0,
        "zy": 1.0,
        "hflip": False,
        "vflip": False,
    } | kw


def test_geometry_of_the_batched_kernel():
    base = _bases(1, size=16)[0]
    d = image_args(augment={"rotation_range": 1, "fill_mode": "nearest"})
    aug = _Fixed(d, train=True)
    aug.table = {
        0: _p(),
        1: _p(hflip=True),
        2: _p(vflip=True, hflip=True),
        3: _p(theta=np.pi / 2),
        4: _p(tx=3.0),
        5: _p(theta=0.3, zx=1.1, tx=1.5),
        6: _p(theta=0.3, zx=1.1, tx=1.5, hflip=True),
    }
    out = aug.batch_uint8(np.stack([base] * 7), list(range(7)), 0).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(out[0], base)  # the identity map is exact
    assert np.array_equal(out[1], base[:, ::-1])
    assert np.array_equal(out[2], base[::-1, ::-1])
    assert np.array_equal(out[3], np.rot90(base, k=-1))  # a quarter turn, exact
    # a shift of 3 columns with nearest fill: columns 3.. then the last column repeated
    assert np.array_equal(out[4][:, :13], base[:, 3:]) and (out[4][:, 13:] == base[:, 15:16]).all()
    assert np.array_equal(out[6], out[5][:, ::-1])  # flips come after the affine map


def test_random_crop_offsets_come_from_the_draw():
    base = np.arange(20 * 20 * 3, dtype=np.uint8).reshape(20, 20, 3)
    d = image_args(resize=20, random_crop=True)
    aug = Augmenter(d, train=True, seed=1)
    crops = {aug.params(i, 0)["crop"] for i in range(30)}
    assert len(crops) > 5
    out = aug.batch_uint8(np.stack([base] * 30), list(range(30)), 0).permute(0, 2, 3, 1)
    for i in range(30):
        top, left = aug.params(i, 0)["crop"]
        assert np.array_equal(out[i].numpy(), base[top : top + 16, left : left + 16])


@pytest.mark.parametrize("mode", ["constant", "nearest", "reflect", "wrap"])
def test_matches_the_scipy_path_it_replaced(mode):
    """Against scipy.ndimage.affine_transform per image and channel (the old path, bilinear):
    within one uint8 level inside; at the one-pixel border band, scipy's bilinear reflect and
    wrap take their second neighbour from a mirrored index, so only there may they differ."""
    ndimage = pytest.importorskip("scipy.ndimage")
    from orchestrator.data.augment import affine_matrix

    scipy_mode = {"constant": "constant", "nearest": "nearest", "reflect": "reflect"}
    scipy_mode["wrap"] = "grid-wrap"
    d = image_args(resize=24, random_crop=True, augment={**FULL, "fill_mode": mode, "cval": 77})
    aug = Augmenter(d, train=True, seed=11)
    bases, ids = _bases(12, size=24, seed=5), list(range(100, 112))
    new = aug.batch_uint8(bases, ids, 2).permute(0, 2, 3, 1).numpy().astype(int)
    worst_inside = 0
    for k, i in enumerate(ids):
        p = aug.params(i, 2)
        top, left = p["crop"]
        x = bases[k, top : top + 16, left : left + 16]
        m = affine_matrix(16, 16, p["theta"], p["tx"], p["ty"], p["shear"], p["zx"], p["zy"])
        ref = np.stack(
            [
                ndimage.affine_transform(
                    x[..., c].astype(np.float32),
                    m[:2, :2],
                    offset=m[:2, 2],
                    order=1,
                    mode=scipy_mode[mode],
                    cval=77,
                )
                for c in range(3)
            ],
            axis=-1,
        )
        ref = np.clip(np.rint(ref), 0, 255).astype(int)
        if p["hflip"]:
            ref = ref[:, ::-1]
        if p["vflip"]:
            ref = ref[::-1]
        diff = np.abs(ref - new[k])
        # where the source point is at least a pixel inside the image, both agree
        src = m @ np.stack(
            [*np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij"), np.ones((16, 16))]
        ).reshape(3, -1)
        inside = ((src[0] >= 1) & (src[0] <= 14) & (src[1] >= 1) & (src[1] <= 14)).reshape(16, 16)
        if p["hflip"]:
            inside = inside[:, ::-1]
        if p["vflip"]:
            inside = inside[::-1]
        worst_inside = max(worst_inside, int(diff[inside].max()))
        if mode in ("constant", "nearest"):
            assert diff.max() <= 1, (mode, k, diff.max())
        # most pixels are identical, not just close
        assert (diff == 0).mean() > 0.97, (mode, k, (diff == 0).mean())
    assert worst_inside <= 1
