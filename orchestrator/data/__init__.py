"""Training data: image folders, augmentation, Parquet shards and Ray Data; parallel text.

    orch data make-shapes data/shapes                  # a small learnable folder, offline
    orch data inspect data/shapes/train --grid g.png   # classes, counts, bad files, a PNG grid
    orch data pack data/shapes/train shards/train      # folder -> Parquet shards (+ manifest)
    orch data preview jobs/resnet_images.yaml --out p.png   # what the model sees after augment

Images come in two ways, and the same samples come out: a **folder** of class folders read by
a torch DataLoader (images.py), or **Parquet shards** of the encoded bytes streamed by Ray Data
(shards.py). Each training image is seen exactly once per epoch across all workers, and its
augmentation is fixed by (seed, epoch, image) whichever path reads it.

The package, by concern:

    args.py      the `data:` section of an image job: ImageDataArgs, AugmentArgs, NormalizeArgs,
                 ShapesArgs (validated when the spec is loaded)
    images.py    image folders: scan, decode, ImageFolderDataset, ShardSampler, collate,
                 folder_splits, folder_loader; DataError and BadImageError
    augment.py   Augmenter: Keras-style random augmentation and normalisation, seeded per sample
    shards.py    Parquet shards: pack, check, read; Ray Data datasets and their caching rule;
                 shard batches without Ray; the generated default data (ensure_default_data)
    lockstep.py  synced_batches: workers whose shares differ in size keep stepping together
    inspect.py   summarize, sample_images, image_grid: what `orch data inspect/preview` show
    shapes.py    the generated shapes data set (`orch data make-shapes`)
    text.py      parallel text for seq2seq jobs: the number-words corpus, pair files, splits

Imports flow one way: shapes <- args <- augment <- images <- shards <- inspect (lockstep uses
images; text stands alone). Nothing here imports torch, numpy, PIL, pyarrow, scipy or Ray at
import time.
"""
