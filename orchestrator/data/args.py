"""The `data:` section of an image job, validated when the spec is loaded (on the driver).

    from orchestrator.data.args import ImageDataArgs
    class DataArgs(ImageDataArgs): ...            # a workload's `data:` arguments
    d = ImageDataArgs.model_validate({"path": "data/shapes/train", "image_size": 32})
    d.base_size                                   # the side images are decoded to (resize)

`ImageDataArgs` says where the images come from (`format: folder|parquet`, `path`, `val_path`
or `val_fraction`, or the generated `shapes` when no path is given) and what is done to them:
`resize`/`image_size`/`random_crop`, `augment` (AugmentArgs: Keras ImageDataGenerator's knobs),
`normalize` (NormalizeArgs), `on_bad` and the loader and Ray Data settings. Local paths are
made absolute here, because workers run in another folder; URIs are kept as they are.

The models live together here, apart from the code that uses them (augment.py, images.py,
shards.py), so that every module of the package can read an ImageDataArgs without an import
cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.data.shapes import SHAPE_CLASSES
from orchestrator.rundir import is_uri

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class AugmentArgs(BaseModel):
    """Random augmentation of training images (Keras ImageDataGenerator's knobs)."""

    model_config = ConfigDict(extra="forbid")

    rotation_range: float = Field(0.0, ge=0, le=180, description="Degrees, uniform in +-range.")
    width_shift_range: float = Field(0.0, ge=0, description="<1: fraction of width; >=1: pixels.")
    height_shift_range: float = Field(0.0, ge=0, description="<1: fraction of height; >=1: pixels.")
    shear_range: float = Field(0.0, ge=0, le=90, description="Shear angle in degrees, +-range.")
    zoom_range: float | list[float] = Field(
        0.0, description="Float z: scale in [1-z, 1+z]; or [lower, upper]. >1 zooms out."
    )
    horizontal_flip: bool = Field(False, description="Flip left-right with probability 0.5.")
    vertical_flip: bool = Field(False, description="Flip top-bottom with probability 0.5.")
    fill_mode: Literal["constant", "nearest", "reflect", "wrap"] = Field(
        "nearest", description="How points outside the image are filled."
    )
    cval: float = Field(
        0.0, ge=0, le=255, description="Fill value for fill_mode: constant (0-255)."
    )

    @field_validator("zoom_range")
    @classmethod
    def _zoom(cls, v):
        if isinstance(v, list):
            if len(v) != 2 or not (0 < v[0] <= v[1]):
                raise ValueError("expected a float or [lower, upper] with 0 < lower <= upper")
        elif not 0 <= v < 1:
            raise ValueError("expected a float in [0, 1) or [lower, upper]")
        return v

    def zoom_bounds(self) -> tuple[float, float]:
        if isinstance(self.zoom_range, list):
            return float(self.zoom_range[0]), float(self.zoom_range[1])
        return 1.0 - self.zoom_range, 1.0 + self.zoom_range

    def is_affine(self) -> bool:
        return bool(
            self.rotation_range
            or self.width_shift_range
            or self.height_shift_range
            or self.shear_range
            or self.zoom_bounds() != (1.0, 1.0)
        )


class NormalizeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mean: list[float] = Field(IMAGENET_MEAN, min_length=3, max_length=3)
    std: list[float] = Field(IMAGENET_STD, min_length=3, max_length=3)

    @field_validator("std")
    @classmethod
    def _positive(cls, v):
        if any(s <= 0 for s in v):
            raise ValueError("expected three positive numbers")
        return v


class ShapesArgs(BaseModel):
    """The generated default data set, used when `path` is not given."""

    model_config = ConfigDict(extra="forbid")
    classes: list[str] = Field(["circle", "square", "triangle", "cross"], min_length=2)
    per_class: int = Field(200, ge=1, le=1_000_000, description="Training images per class.")
    val_per_class: int = Field(50, ge=1, le=1_000_000, description="Validation images per class.")
    size: int = Field(32, ge=8, le=1024, description="Side of the generated images (pixels).")
    seed: int = Field(0, ge=0)

    @field_validator("classes")
    @classmethod
    def _known(cls, v):
        bad = [c for c in v if c not in SHAPE_CLASSES]
        if bad:
            raise ValueError(f"unknown shape(s) {bad}; expected some of {', '.join(SHAPE_CLASSES)}")
        return v


def _abs(path: str | None) -> str | None:
    """Resolve local paths when the spec is loaded (on the driver): workers' cwd differs."""
    if path is None or is_uri(path):
        return path
    return str(Path(path).expanduser().resolve())


class ImageDataArgs(BaseModel):
    """Where the images come from and what is done to them."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["folder", "parquet"] = Field(
        "folder",
        description="folder: class sub-folders via DataLoader; parquet: shards via Ray Data.",
    )
    path: str | None = Field(
        None,
        description="Training data: a folder of class folders, or a folder of .parquet shards. "
        "Default: the generated shapes (see `shapes`).",
    )
    val_path: str | None = Field(None, description="Validation data, same format as `path`.")
    val_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Held out of `path` (by a hash of each file name) when no val_path.",
    )
    cache_dir: str = Field(
        "~/.cache/orchestrator/data",
        description="Where generated shapes and their shards are kept.",
    )
    shapes: ShapesArgs = Field(default_factory=ShapesArgs)
    image_size: int = Field(224, ge=8, le=4096, description="Side of the square the model sees.")
    resize: int | None = Field(
        None,
        ge=8,
        le=8192,
        description="Shorter side is resized to this, then centre-cropped square; "
        "default image_size.",
    )
    random_crop: bool = Field(
        False, description="Train: random image_size crop of the resized image."
    )
    augment: AugmentArgs = Field(default_factory=AugmentArgs)
    normalize: NormalizeArgs = Field(default_factory=NormalizeArgs)
    on_bad: Literal["skip", "fail"] = Field(
        "skip",
        description="An unreadable/truncated image: skip it (counted, named) or fail the job.",
    )
    loader_workers: int = Field(
        2, ge=0, le=256, description="DataLoader processes per worker (folder)."
    )
    shuffle_buffer: int = Field(
        256, ge=0, description="Ray Data local shuffle buffer (rows; parquet)."
    )
    cache: Literal["auto", "true", "false"] = Field(
        "auto",
        description="parquet: decode once and keep the decoded rows in Ray's object store "
        "for every epoch (true), or read and decode the shards again each epoch (false); "
        "auto caches when the decoded images take at most a quarter of the object store.",
    )

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_bool(cls, v):
        return {True: "true", False: "false"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("path", "val_path")
    @classmethod
    def _resolve(cls, v):
        return _abs(v)

    @model_validator(mode="after")
    def _sizes(self) -> ImageDataArgs:
        if self.resize is not None and self.resize < self.image_size:
            raise ValueError(f"resize ({self.resize}) must be >= image_size ({self.image_size})")
        return self

    @property
    def base_size(self) -> int:
        return self.resize or self.image_size
