"""Datasets and loaders: ImageFolder trees, list files, binary CIFAR-10.

Built on mindcv's ``create_dataset`` / ``create_transforms`` / ``create_loader``;
what this module adds is checking the data before a long run starts (each
problem one clear error naming the path) and exact validation sharding.
"""
import glob
import os
import re
import time

import numpy as np

from ..cli import UserError, first_line

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DataSpec:
    """What was found on disk for one split: where, how many samples and classes."""

    def __init__(self, kind, root, num_samples, num_classes, items=None, class_names=None):
        self.kind, self.root = kind, root
        self.num_samples, self.num_classes = num_samples, num_classes
        self.items = items  # (path, label) pairs for list files
        self.class_names = class_names  # an ImageFolder's class folder names, in label order (else None)


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
    return total, classes


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
    return DataSpec("folder", root, total, len(classes), class_names=classes)


def check_class_names(spec, recorded, what, flag):
    """The class folders of ``spec`` must be those a checkpoint recorded (``recorded``, in label order):
    UserError naming the first difference otherwise (``flag``: the option that scores anyway).  Nothing
    to compare (no record, or data without folder names) passes."""
    if not recorded or not spec.class_names or list(recorded) == list(spec.class_names):
        return
    for label, (mine, theirs) in enumerate(zip(spec.class_names, recorded)):
        if mine != theirs:
            first = f"label {label} is folder '{mine}' here, '{theirs}' in training"
            break
    else:
        first = f"{len(spec.class_names)} class folders here, {len(recorded)} in training"
    raise UserError(f"{spec.root}: the class folders differ from those {what} was trained on ({first}); "
                    f"pass {flag} to score anyway")


def check_download(cfg):
    """``dataset_download: True``: this port reads data from disk only.

    Data already in place need no download, so the run goes on; otherwise one
    error says where to put the data.
    """
    try:
        inspect(cfg, "train")
    except UserError as err:
        what = ("CIFAR-10's binary version (cifar-10-binary.tar.gz) and extract it into data_dir"
                if cfg["dataset"] == "cifar10" else "the dataset as data_dir/<split>/<class>/<image>")
        raise UserError(f"option 'dataset_download': downloading needs network access, which this port does not "
                        f"use; download {what} ({err})") from None


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


def workers(cfg, log=None):
    """``num_parallel_workers``, lowered to the machine's cores (MindSpore refuses more), with one logged line."""
    cores = os.cpu_count() or 1
    wanted = cfg["num_parallel_workers"]
    if wanted > cores:
        if log:
            log(f"num_parallel_workers {wanted} is more than this machine's {cores} cores; using {cores}")
        return cores
    return wanted


def transforms(cfg, training):
    """mindcv's transforms with every augmentation option of the recipe."""
    from mindcv.data import create_transforms

    if cfg["dataset"] == "cifar10":
        return create_transforms("cifar10", image_resize=cfg["image_resize"], is_training=training)
    kwargs = dict(interpolation=cfg["interpolation"], mean=list(cfg["mean"]), std=list(cfg["std"]))
    if training:
        kwargs.update(scale=tuple(cfg["scale"]), ratio=tuple(cfg["ratio"]), hflip=cfg["hflip"], vflip=cfg["vflip"],
                      color_jitter=cfg["color_jitter"], auto_augment=cfg["auto_augment"],
                      separate=cfg["aug_splits"] > 0, re_prob=cfg["re_prob"], re_scale=tuple(cfg["re_scale"]),
                      re_ratio=tuple(cfg["re_ratio"]), re_value=cfg["re_value"],
                      re_max_attempts=cfg["re_max_attempts"])
    else:
        kwargs.update(crop_pct=cfg["crop_pct"])
    try:
        return create_transforms("imagenet", image_resize=cfg["image_resize"], is_training=training, **kwargs)
    except (ValueError, TypeError, RuntimeError, AssertionError, KeyError) as err:
        raise UserError(f"augmentation options are not accepted by mindcv's transforms ({first_line(err)})") \
            from None


def _training_sampler(cfg, size, rank, world):
    """A sampler for the training data when the plain shuffle/shard arguments do not say it all."""
    import mindspore.dataset as ds
    from mindcv.data.distributed_sampler import RepeatAugSampler

    if cfg["aug_repeats"] > 1:
        return RepeatAugSampler(size, num_shards=world, rank_id=rank, shuffle=cfg["shuffle"],
                                num_repeats=cfg["aug_repeats"])
    if cfg["num_samples"]:
        if world > 1:
            return ds.DistributedSampler(world, rank, shuffle=cfg["shuffle"], num_samples=cfg["num_samples"])
        cls = ds.RandomSampler if cfg["shuffle"] else ds.SequentialSampler
        return cls(num_samples=cfg["num_samples"]) if not cfg["shuffle"] else cls(replacement=False,
                                                                                   num_samples=cfg["num_samples"])
    return None


def create_loader(cfg, spec, training, rank=0, world=1, num_workers=None, indices=None):
    """Batched loader for ``spec``.

    Training: shuffled (``shuffle``), sharded by rank (MindSpore pads shards to
    equal length), repeated augmentation (``aug_repeats``) or a subset
    (``num_samples``) through mindcv's samplers, ``drop_remainder``, mixup /
    cutmix (soft labels) through mindcv's loader.  Validation: every sample
    exactly once over all ranks (rank r takes samples r, r + world, ...), last
    batch kept, in order unless ``eval_shuffle``; ``indices`` (one rank) takes
    those samples only, in that order (INT8 calibration).
    """
    import mindspore.dataset as ds
    from mindcv.data import create_loader as mindcv_loader

    workers_ = num_workers or workers(cfg)
    num_classes = cfg["num_classes"] or spec.num_classes
    if training:
        sampler = _training_sampler(cfg, spec.num_samples, rank, world)
        kwargs = dict(sampler=sampler) if sampler is not None else dict(shuffle=cfg["shuffle"])
        if sampler is None and world > 1:
            kwargs.update(num_shards=world, shard_id=rank)
    else:
        if spec.num_samples < world:
            raise UserError(f"{spec.root}: {spec.num_samples} validation samples cannot be spread over {world} ranks")
        if indices is not None:
            kwargs = dict(sampler=ds.SubsetSampler(list(indices)))
        elif world > 1:
            indices = list(range(rank, spec.num_samples, world))
            cls = ds.SubsetRandomSampler if cfg["eval_shuffle"] else ds.SubsetSampler
            kwargs = dict(sampler=cls(indices))
        else:
            kwargs = dict(shuffle=cfg["eval_shuffle"])
    if spec.kind == "list":
        dataset = ds.GeneratorDataset(_ListSource(spec.items), column_names=["image", "label"],
                                      num_parallel_workers=workers_, **kwargs)
    elif spec.kind == "cifar10":
        dataset = ds.Cifar10Dataset(spec.root, usage="train" if training else "test", num_parallel_workers=workers_,
                                    **kwargs)
    else:
        dataset = ds.ImageFolderDataset(spec.root, num_parallel_workers=workers_, **kwargs)
    mix = training and (cfg["mixup"] > 0 or cfg["cutmix"] > 0)
    return mindcv_loader(dataset, batch_size=cfg["batch_size"],
                         drop_remainder=(cfg["drop_remainder"] or mix) if training else False,
                         is_training=training, mixup=cfg["mixup"] if training else 0.0,
                         cutmix=cfg["cutmix"] if training else 0.0, cutmix_prob=cfg["cutmix_prob"],
                         num_classes=num_classes, transform=transforms(cfg, training),
                         num_parallel_workers=workers_, separate=training and cfg["aug_splits"] > 0)


_BAD_FILE = re.compile(r"corresponding data file is: (.+?)\. (.*?)(?:\n|$)")


_STARTED = time.time()


def remove_image_dump():
    """MindSpore's decoder copies an image it cannot decode to ``./abnormal_image.*``: the error names the
    file already, so the copy (made by this process) goes."""
    for path in glob.glob("abnormal_image.*"):
        try:
            if os.path.getmtime(path) >= _STARTED:
                os.remove(path)
        except OSError:
            pass


def pipeline_error(err):
    """A one-line UserError for a data pipeline failure (e.g. an image that does not decode), else None."""
    remove_image_dump()
    text = str(err)
    match = _BAD_FILE.search(text)
    if match:
        path = os.path.normpath(match.group(1))
        return UserError(f"{path}: cannot read image ({match.group(2).strip().rstrip('.') or 'decode failed'})")
    if "Dataset Pipeline Error Message" in text:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("[ERROR]")]
        return UserError(f"data pipeline failed: {lines[0][8:] if lines else first_line(err)}")
    return None
