"""`orch data`: make, pack, inspect and preview image data sets.

    orch data make-shapes data/shapes --per-class 200 --size 32     # offline, learnable
    orch data inspect data/shapes/train --grid samples.png --verify # classes, counts, bad files
    orch data pack data/shapes/train shards/train --shard-mb 64     # folder -> Parquet shards
    orch data preview jobs/resnet_images.yaml data.augment.rotation_range=30 --out aug.png

Heavy imports (PIL, pyarrow, numpy) happen inside the commands.
"""

from __future__ import annotations

import json

import typer

from orchestrator.cli.console import console, fail
from orchestrator.errors import ExitCode


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help=__doc__, no_args_is_help=True, rich_markup_mode=None)

    @data_app.command("make-shapes")
    def make_shapes_cmd(
        out: str = typer.Argument(
            ..., help="Folder to create (OUT/train/<class>, OUT/val/<class>)."
        ),
        per_class: int = typer.Option(200, help="Training images per class."),
        val_per_class: int = typer.Option(50, help="Validation images per class."),
        size: int = typer.Option(32, help="Image side in pixels."),
        classes: str = typer.Option(
            "circle,square,triangle,cross",
            help="Comma-separated, from circle,square,triangle,cross,ring,bar.",
        ),
        seed: int = typer.Option(0, help="Same seed and settings, same bytes."),
        fmt: str = typer.Option("png", "--format", help="png or jpg."),
        overwrite: bool = typer.Option(False, help="Replace an existing folder."),
    ) -> None:
        """Write a small, learnable image folder of coloured geometric shapes (no download)."""

        from orchestrator.data.shapes import make_shapes

        names = [c.strip() for c in classes.split(",") if c.strip()]
        try:
            path = make_shapes(
                out,
                per_class=per_class,
                val_per_class=val_per_class,
                size=size,
                classes=names,
                seed=seed,
                fmt=fmt,
                overwrite=overwrite,
            )
        except (ValueError, FileExistsError) as exc:
            from orchestrator.data.images import DataError

            fail(DataError(str(exc)))
        n = (per_class + val_per_class) * len(names)
        console.print(
            f"wrote {n} images of {len(names)} classes ({size}x{size} {fmt}) to "
            f"{path}/train and {path}/val",
            soft_wrap=True,
        )

    @data_app.command("pack")
    def pack_cmd(
        folder: str = typer.Argument(..., help="An image folder: FOLDER/<class>/<image>."),
        out: str = typer.Argument(..., help="Empty folder for the .parquet shards."),
        shard_mb: float = typer.Option(64.0, help="Target shard size in MiB of encoded images."),
        rows_per_shard: int | None = typer.Option(
            None, help="Or: at most this many images per shard."
        ),
        on_bad: str = typer.Option(
            "skip", help="skip (listed in the report) or fail on a bad image."
        ),
        verify: bool = typer.Option(True, help="Decode every image once to find bad ones."),
        seed: int = typer.Option(
            0,
            help="Rows are written in an order shuffled with this seed, so each shard "
            "mixes the classes (readers shuffle only within a buffer).",
        ),
        keep_order: bool = typer.Option(
            False, "--keep-order", help="Write rows class by class, in the folder's order."
        ),
    ) -> None:
        """Pack an image folder into Parquet shards (image bytes, label, index, file)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from orchestrator.data.images import DataError
        from orchestrator.data.shards import SHARDS_MANIFEST, pack_folder
        from orchestrator.errors import OrchestratorError

        if on_bad not in ("skip", "fail"):
            fail(DataError(f"--on-bad: expected skip or fail (given: {on_bad})"))
        try:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            ) as bar:
                task = bar.add_task(f"packing {folder}", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                report = pack_folder(
                    folder,
                    out,
                    shard_mb=shard_mb,
                    rows_per_shard=rows_per_shard,
                    on_bad=on_bad,
                    verify=verify,
                    progress=progress,
                    shuffle_seed=None if keep_order else seed,
                )
        except OrchestratorError as exc:
            fail(exc)
        console.print(
            f"packed {report.rows} images of {len(report.classes)} classes into "
            f"{len(report.shards)} shard(s), {report.bytes / 2**20:.2f} MiB, in {report.out}",
            soft_wrap=True,
        )
        for name, count in report.counts.items():
            console.print(f"  {name}: {count}", soft_wrap=True)
        if report.bad:
            console.print(
                f"[yellow]skipped {len(report.bad)} bad image(s)[/yellow] "
                f"(listed in {report.out}/{SHARDS_MANIFEST}):",
                soft_wrap=True,
            )
            for f, why in report.bad[:20]:
                console.print(f"  {f}: {why}", highlight=False, markup=False, soft_wrap=True)

    @data_app.command("inspect")
    def inspect_cmd(
        path: str = typer.Argument(..., help="An image folder or a folder of .parquet shards."),
        grid: str | None = typer.Option(None, help="Write a PNG grid of sample images here."),
        n: int = typer.Option(16, help="Images in the grid."),
        size: int = typer.Option(64, help="Side of each grid tile."),
        verify: bool = typer.Option(False, help="Decode every image and list the bad ones."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Print classes and counts (and bad files with --verify); optionally a PNG grid."""
        from rich.table import Table

        from orchestrator.data.inspect import image_grid, sample_images, summarize
        from orchestrator.errors import OrchestratorError

        try:
            info = summarize(path, verify=verify)
            if grid:
                imgs, labels = sample_images(path, n=n, size=size)
                image_grid(imgs, labels, cols=min(8, max(1, len(imgs)))).save(grid)
        except OrchestratorError as exc:
            fail(exc)
        if as_json:
            print(json.dumps(info, indent=2))
        else:
            table = Table(title=f"{info['path']} ({info['format']})")
            table.add_column("class")
            table.add_column("images", justify="right")
            for name, count in info["counts"].items():
                table.add_row(name, str(count))
            table.add_row("[bold]total[/bold]", f"[bold]{info['rows']}[/bold]")
            console.print(table, soft_wrap=True)
            if info["format"] == "parquet":
                console.print(
                    f"{info['shards']} shard(s), {info['bytes'] / 2**20:.2f} MiB", soft_wrap=True
                )
            if info.get("ignored"):
                console.print(
                    f"{len(info['ignored'])} non-image file(s) ignored, e.g. {info['ignored'][0]}",
                    soft_wrap=True,
                )
            if verify:
                console.print(f"bad images: {len(info['bad'])}", soft_wrap=True)
                for b in info["bad"][:50]:
                    console.print(
                        f"  {b['file']}: {b['reason']}",
                        highlight=False,
                        markup=False,
                        soft_wrap=True,
                    )
        if grid:
            console.print(f"wrote {grid}", soft_wrap=True)
        if verify and info["bad"]:
            raise typer.Exit(ExitCode.DATA)

    @data_app.command("preview")
    def preview_cmd(
        spec: str = typer.Argument(
            ..., help="A job spec whose data section to use (resnet_images)."
        ),
        overrides: list[str] | None = typer.Argument(
            None, help="Dotted overrides, e.g. data.augment.rotation_range=30"
        ),
        out: str = typer.Option("preview.png", help="PNG file to write."),
        n: int = typer.Option(8, help="Source images."),
        variants: int = typer.Option(4, help="Augmented versions of each (epochs 0..variants-1)."),
        scale: int = typer.Option(0, help="Tile magnification; 0 picks one for ~96 px tiles."),
    ) -> None:
        """Write a PNG grid of augmented training samples: what the model sees.

        Each row is one image: the un-augmented crop, then its augmentation in epochs 0, 1, ...
        """

        from orchestrator.data.args import ImageDataArgs
        from orchestrator.data.augment import Augmenter
        from orchestrator.data.images import base_array, decode_image, scan_folder
        from orchestrator.data.inspect import image_grid
        from orchestrator.data.shards import ensure_default_data, iter_shard_rows
        from orchestrator.errors import OrchestratorError
        from orchestrator.spec import load_spec

        try:
            s = load_spec(spec, overrides or [])
            d = ImageDataArgs.model_validate(s.data)
            d = ensure_default_data(d)
            folder = d.path
            if d.format == "parquet":
                # show the rows by their file name; decode from the shards
                rows = []
                for k, row in enumerate(iter_shard_rows(folder)):
                    rows.append(row)
                    if k + 1 >= n:
                        break
                bases = [
                    (
                        base_array(decode_image(r["image"], r["file"]), d.base_size),
                        r["index"],
                        r["file"],
                    )
                    for r in rows
                ]
            else:
                idx = scan_folder(folder)
                step = max(1, len(idx.samples) // n)
                picked = idx.samples[::step][:n]
                bases = [
                    (base_array(decode_image(p.file), d.base_size), p.index, p.rel) for p in picked
                ]
            plain = Augmenter(d, train=False, seed=s.seed)
            aug = Augmenter(d, train=True, seed=s.seed)
            tiles, labels = [], []
            for base, index, rel in bases:
                tiles.append(plain.augment_uint8(base, index, 0))
                labels.append(rel.split("/")[0])
                for e in range(variants):
                    tiles.append(aug.augment_uint8(base, index, e))
                    labels.append(f"epoch {e}")
            k = scale or max(1, 96 // d.image_size)
            image_grid(tiles, labels, cols=variants + 1, scale=k).save(out)
        except OrchestratorError as exc:
            fail(exc)
        console.print(
            f"wrote {out}: {len(bases)} images x (original + {variants} augmented), "
            f"{d.image_size}x{d.image_size}",
            soft_wrap=True,
        )

    app.add_typer(data_app, name="data", help="Make, pack, inspect and preview image data sets.")
