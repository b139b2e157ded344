"""Datasets and loaders: ImageFolder trees, list files, binary CIFAR-10.

Built on mindcv's ``create_dataset`` / ``create_transforms`` / ``create_loader``;
what this module adds is checking the data before a long run starts (each
problem one clear error naming the path) and exact validation sharding.
"""
import os
import re

import numpy as np

from .cli import UserError, first_line

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DataSpec:
    """What was found on disk for one split: where, how many samples and classes."""

    def __init__(self, kind, root, num_samples, num_classes, items=None):
        self.kind, self.root = kind, root
        self.num_samples, self.num_classes = num_samples, num_classes
        self.items = items  # (path, label) pairs for list files


def _scan_image_folder(root):
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise UserError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    total = 0
    for name in classes:
        folder = os.path.join(root, name)
        count = sum(1 for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        if count == 0:
            raise UserError(f"{folder}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} images)")
        total += count
    return total, len(classes)


def _read_list(path, root):
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
                raise UserError(f"{path}:{number}: expected 'relative/path label', got {line.strip()!r}")
            image = os.path.join(root, parts[0].strip())
            if not os.path.isfile(image):
                raise UserError(f"{path}:{number}: no such image {image}")
            items.append((image, int(parts[1])))
    if not items:
        raise UserError(f"{path}: empty list file")
    return items


def cifar_dir(data_dir):
    """The folder holding CIFAR-10's .bin files: data_dir/cifar-10-batches-bin, or data_dir itself."""
    inner = os.path.join(data_dir, "cifar-10-batches-bin")
    return inner if os.path.isdir(inner) else data_dir


def inspect(cfg, split):
    """Check the data of ``split`` ("train" or "val") before anything runs; return a :class:`DataSpec`."""
    data_dir = cfg["data_dir"]
    if not data_dir:
        raise UserError("option 'data_dir' is not set")
    if not os.path.isdir(data_dir):
        raise UserError(f"{data_dir}: data_dir does not exist")
    if cfg["dataset"] == "cifar10":
        root = cifar_dir(data_dir)
        names = ["data_batch_%d.bin" % i for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
        missing = [n for n in names if not os.path.isfile(os.path.join(root, n))]
        if missing:
            raise UserError(f"{os.path.join(root, missing[0])}: missing CIFAR-10 file "
                            f"(data_dir must hold cifar-10-batches-bin)")
        return DataSpec("cifar10", root, 10000 * len(names), 10)
    list_file = cfg[f"{split}_list"]
    if list_file:
        path = list_file if os.path.isabs(list_file) else os.path.join(data_dir, list_file)
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such list file ({split}_list)")
        items = _read_list(path, data_dir)
        return DataSpec("list", path, len(items), max(label for _, label in items) + 1, items)
    root = os.path.join(data_dir, cfg[f"{split}_split"])
    if not os.path.isdir(root):
        raise UserError(f"{root}: split folder does not exist ({split}_split={cfg[f'{split}_split']!r})")
    total, classes = _scan_image_folder(root)
    return DataSpec("folder", root, total, classes)


def check_num_classes(spec, num_classes, split):
    if spec.num_classes != num_classes:
        raise UserError(f"{spec.root}: the {split} data has {spec.num_classes} classes but num_classes is "
                        f"{num_classes}")


class _ListSource:
    """Random-access source of (encoded image bytes, label) for list files."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        path, label = self.items[index]
        return np.fromfile(path, np.uint8), np.int32(label)


def transforms(cfg, training):
    from mindcv.data import create_transforms

    if cfg["dataset"] == "cifar10":
        return create_transforms("cifar10", image_resize=cfg["image_resize"], is_training=training)
    kwargs = dict(interpolation=cfg["interpolation"])
    if training:
        kwargs.update(scale=tuple(cfg["scale"]), ratio=tuple(cfg["ratio"]), hflip=cfg["hflip"])
    else:
        kwargs.update(crop_pct=cfg["crop_pct"])
    return create_transforms("imagenet", image_resize=cfg["image_resize"], is_training=training, **kwargs)


def create_loader(cfg, spec, training, rank=0, world=1):
    """Batched loader for ``spec``.

    Training: shuffled, sharded by rank (MindSpore pads shards to equal length),
    incomplete last batch dropped.  Validation: every sample exactly once over
    all ranks (rank r takes samples r, r + world, ...), last batch kept.
    """
    import mindspore.dataset as ds
    from mindcv.data import create_dataset
    from mindcv.data import create_loader as mindcv_loader

    workers = max(1, min(cfg["num_parallel_workers"], os.cpu_count() or 1))
    if training:
        shard = dict(num_shards=world, shard_id=rank) if world > 1 else {}
        sampler = None
    else:
        if spec.num_samples < world:
            raise UserError(f"{spec.root}: {spec.num_samples} validation samples cannot be spread over {world} ranks")
        shard = {}
        sampler = ds.SubsetSampler(list(range(rank, spec.num_samples, world))) if world > 1 else None
    if spec.kind == "list":
        kwargs = dict(sampler=sampler) if sampler is not None else dict(shuffle=training, **shard)
        dataset = ds.GeneratorDataset(_ListSource(spec.items), column_names=["image", "label"],
                                      num_parallel_workers=workers, **kwargs)
    elif sampler is not None:
        cls = ds.Cifar10Dataset if spec.kind == "cifar10" else ds.ImageFolderDataset
        extra = dict(usage="test") if spec.kind == "cifar10" else {}
        dataset = cls(spec.root, sampler=sampler, num_parallel_workers=workers, **extra)
    else:
        name = "cifar10" if spec.kind == "cifar10" else ""
        split = ("train" if training else "test") if spec.kind == "cifar10" else ""
        dataset = create_dataset(name, spec.root, split=split, shuffle=training, num_parallel_workers=workers,
                                 **shard)
    return mindcv_loader(dataset, batch_size=cfg["batch_size"], drop_remainder=training, is_training=training,
                         num_classes=cfg["num_classes"], transform=transforms(cfg, training),
                         num_parallel_workers=workers)


_BAD_FILE = re.compile(r"corresponding data file is: (.+?)\. (.*?)(?:\n|$)")


def pipeline_error(err):
    """A one-line UserError for a data pipeline failure (e.g. an image that does not decode), else None."""
    text = str(err)
    match = _BAD_FILE.search(text)
    if match:
        path = os.path.normpath(match.group(1))
        return UserError(f"{path}: cannot read image ({match.group(2).strip().rstrip('.') or 'decode failed'})")
    if "Dataset Pipeline Error Message" in text:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("[ERROR]")]
        return UserError(f"data pipeline failed: {lines[0][8:] if lines else first_line(err)}")
    return None
