"""The training loop's data (`data.loader.TrainingData`) from a run's options and recipe.

CIFAR keeps decoded uint8 tensors on the training device and augments whole batches there (Sec. 4.2). Imagenette
(ImageNet photos stored at 224x224) does the same with the ImageNet augmentation of Sec. 3.4 done per batch
(`ScaleCropFlip`), evaluating on centre views resized once; ImageNet-style
folders decode JPEGs in DataLoader workers with the paper's scale augmentation (Sec. 3.4), while lighting and mean
subtraction run on the collated batch on the training device. ImageNet layout under --data: train/<wnid>/*.JPEG and
val/<wnid>/*.JPEG, or a flat val/ folder with a labels file (--val-labels FILE), or flat folders of <wnid>_<name> files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from ..data.cifar import load_cifar, train_val_split
from ..data.decoded import (
    DatasetError,
    DecodedImages,
    class_folders,
    list_images,
    per_pixel_mean,
    read_image_folder,
    spread_indices,
)
from ..data.folder import ImageFolderDataset, open_image_folder
from ..data.loader import FolderBatchLoader, TensorBatchLoader, TrainingData
from ..data.paths import datasets_root
from ..data.preprocess import Preprocessing
from ..data.transforms import (
    IMAGENET_RGB_MEAN,
    IMAGENET_RGB_STD,
    EvalTransform,
    Normalize,
    PaperTrainTransform,
    RandomResizedCropFlip,
    ScaleCropFlip,
    compute_mean_image,
    compute_pca_lighting,
    pixel_pca,
    resize_shorter_side,
)
from ..runtime import Runtime
from .recipes import DATASETS, Recipe, RunOptions

CIFAR_DATASETS = tuple(name for name, kind in DATASETS.items() if kind.family == "cifar")
DECODED_IMAGENET_DATASETS = {"imagenette": 224}  # ImageNet-style folders of equal-size images: name -> image size
CIFAR_EVAL_BATCH = 500
IMAGENET_EVAL_BATCH = 50


def build_data(options: RunOptions, recipe: Recipe, runtime: Runtime,
               preprocess: Preprocessing | None = None) -> TrainingData:
    """The run's data; `preprocess`: the --pretrained weights' own, which `--dataset folder` adopts (crop, resize and
    mean), so that a fine-tuned model sees what its body was trained on (the other datasets bring their own)."""
    if options.dataset == "folder":
        return build_folder_data(options, recipe, runtime, preprocess)
    if options.dataset in CIFAR_DATASETS:
        return build_cifar_data(options, recipe, runtime)
    if options.dataset == "imagenet":
        return build_imagenet_data(options, recipe, runtime)
    if options.dataset in DECODED_IMAGENET_DATASETS:
        return build_decoded_imagenet_data(options, recipe, runtime)
    raise ValueError(f"unknown dataset {options.dataset!r}; valid: {', '.join(DATASETS)}")


def random_subset(total: int, count: int, seed: int) -> torch.Tensor:
    """`count` of `total` training images in a seeded random order (--subset smoke runs)."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count]


def build_cifar_data(options: RunOptions, recipe: Recipe, runtime: Runtime) -> TrainingData:
    train = load_cifar(options.data, options.dataset, "train")
    test = load_cifar(options.data, options.dataset, "test")
    device = runtime.device
    train_images, train_labels = train.images, train.labels
    evals_source = {"test": (test.images, test.labels)}
    if recipe.val_split:
        train_index, val_index = train_val_split(len(train_labels), recipe.val_split, seed=0)
        evals_source["val"] = (train_images[val_index], train_labels[val_index])
        train_images, train_labels = train_images[train_index], train_labels[train_index]
    if options.subset:
        chosen = random_subset(len(train_labels), options.subset, options.seed)
        train_images, train_labels = train_images[chosen], train_labels[chosen]
    if options.eval_subset:  # spread evenly: image folders list the test set class by class
        picks = {k: spread_indices(len(y), options.eval_subset) for k, (_, y) in evals_source.items()}
        evals_source = {k: (x[picks[k]], y[picks[k]]) for k, (x, y) in evals_source.items()}
    # Sec. 4.2: "the per-pixel mean subtracted", computed on the images the network trains on.
    mean = per_pixel_mean(train_images).to(device)
    common = {"mean": mean, "channels_last": options.channels_last}
    train_loader = TensorBatchLoader(
        train_images.to(device), train_labels.to(device), batch_size=recipe.batch_size // runtime.world_size,
        shuffle=True, augment=recipe.augment, pad=recipe.pad, drop_last=True, seed=options.seed,
        rank=runtime.rank, world_size=runtime.world_size, **common)
    shard = slice(runtime.rank, None, runtime.world_size)  # each rank evaluates every world_size-th image
    evals = {split: TensorBatchLoader(images[shard].to(device), labels[shard].to(device), batch_size=CIFAR_EVAL_BATCH,
                                      shuffle=False, augment=False, drop_last=False, **common)
             for split, (images, labels) in evals_source.items()}
    preprocess = Preprocessing("cifar", 32, 32, tuple(mean.mean(dim=(1, 2)).cpu().tolist()), None, mean.cpu())
    description = {"source": train.source, "dataset": options.dataset, "train_images": len(train_labels),
                   "test_images": len(evals_source["test"][1]), "val_images": recipe.val_split}
    return TrainingData(train_loader, evals, list(train.classes), len(train_labels), preprocess, description)


def build_decoded_imagenet_data(options: RunOptions, recipe: Recipe, runtime: Runtime) -> TrainingData:
    """train/ and val/ class folders of equal-size photos, decoded once (cached) and held whole on the device."""
    name, size = options.dataset, DECODED_IMAGENET_DATASETS[options.dataset]
    root = Path(options.data) if options.data else datasets_root() / name
    train = read_image_folder(root, "train", size, kind=name)
    val = read_image_folder(root, "val", size, kind=name)
    geometry = DecodedGeometry(size, (recipe.scale_min, recipe.scale_max), recipe.crop_size, recipe.eval_resize,
                               recipe.eval_crop or recipe.crop_size)
    held_out = None
    if recipe.val_split:  # tuning: a seeded part of the training photos held out, evaluated as "val"
        train_index, val_index = train_val_split(len(train), recipe.val_split, seed=0)
        held_out = _part(train, val_index.sort().values)
        train = _part(train, train_index)
    data = decoded_training_data(options, recipe, runtime, train, val, geometry, held_out=held_out)
    data.description = {"source": f"{train.source}; {val.source}", "dataset": name, **data.description}
    return data


@dataclass(frozen=True)
class DecodedGeometry:
    """Sizes of a decoded photo set: images stored `image_size` square, trained on random `crop` views of shorter
    side in `scale` (or random-resized crops of the photo at `resize`), evaluated on the centre `eval_crop` of
    shorter side `resize`."""

    image_size: int
    scale: tuple[int, int]
    crop: int
    resize: int
    eval_crop: int


def decoded_training_data(options: RunOptions, recipe: Recipe, runtime: Runtime, train: DecodedImages,
                          val: DecodedImages, geometry: DecodedGeometry, preprocess: Preprocessing | None = None,
                          held_out: DecodedImages | None = None) -> TrainingData:
    """Loaders over decoded photos held whole on the device: Sec. 3.4's augmentation per batch (`ScaleCropFlip`),
    evaluation on centre views made once. `preprocess` (weights' own, when fine-tuning) fixes the normalisation;
    without it, the per-pixel mean image of the training photos' centre views is subtracted (Sec. 3.4)."""
    size, crop, eval_crop = geometry.image_size, geometry.crop, geometry.eval_crop
    train_images, train_labels = train.images, train.labels
    if options.subset:
        chosen = random_subset(len(train_labels), options.subset, options.seed)
        train_images, train_labels = train_images[chosen], train_labels[chosen]
    picked = spread_indices(len(val.labels), options.eval_subset)  # val folders are sorted by class
    # Evaluation sees what `preprocess` and the `center` protocol feed a network: the same uint8 resize and crop.
    center = EvalTransform(geometry.resize, eval_crop).geometry

    def centre_views(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([center(part) for part in images.split(256)])

    val_views, train_views = centre_views(val.images[picked]), centre_views(train_images)
    if preprocess is None and recipe.mean == "channel":  # beyond the paper: torchvision's per-channel mean and std
        preprocess = Preprocessing("imagenet", geometry.resize, eval_crop, IMAGENET_RGB_MEAN, IMAGENET_RGB_STD)
    elif preprocess is None:
        # Sec. 3.4: "the per-pixel mean subtracted", of centre views (at most recipe.mean_images, spread over classes).
        # Only a network fed crops of the mean image's own size gets it whole (train crop = test crop); otherwise
        # Normalize subtracts its per-channel average from the training crops.
        mean_image = per_pixel_mean(train_views[spread_indices(len(train_views), recipe.mean_images)])
        preprocess = Preprocessing("imagenet", geometry.resize, eval_crop, tuple(mean_image.mean(dim=(1, 2)).tolist()),
                                   None, mean_image)
    # Trained at one size, tested at another: the record says so (the test protocols scale from the training crop).
    preprocess = replace(preprocess, train_crop=None if crop == preprocess.crop else crop)
    normalize = preprocess.normalize
    device = runtime.device
    # As the loaders take them: a mean image (3 x crop x crop) or per-channel values shaped 3 x 1 x 1.
    device_mean = (normalize.mean if normalize.per_pixel else normalize.mean[:, None, None]).to(device)
    device_std = None if normalize.std is None else normalize.std[:, None, None].to(device)
    pca = {}
    if recipe.lighting_pca == "computed" and recipe.lighting_std > 0:
        eigval, eigvec = pixel_pca(train_views.split(256))
        pca = {"eigval": eigval, "eigvec": eigvec}
    whole_mean = normalize.per_pixel and eval_crop == crop and not recipe.crop_sizes
    train_normalize = Normalize(device_mean if whole_mean else device_mean.mean((1, 2)),
                                None if device_std is None else device_std.flatten())
    train_source = train_images if recipe.augment else train_views
    if recipe.augment and recipe.crop_area:
        # Crops of the photo as the test sees it (shorter side `resize`, made once, antialiased): one source
        # resolution for training and testing, as FixRes trains its crops; multi-size crops larger than that are cut
        # from the photo at their largest side, not enlarged.
        source_side = max((geometry.resize, *recipe.crop_sizes))
        train_source = torch.cat([resize_shorter_side(part, source_side) for part in train_images.split(256)])
        augment = RandomResizedCropFlip(tuple(train_source.shape[-2:]), tuple(recipe.crop_area), crop_size=crop,
                                        lighting_std=recipe.lighting_std, normalize=train_normalize, **pca,
                                        sizes=recipe.crop_sizes, batch_size=recipe.batch_size)
    else:
        augment = (ScaleCropFlip((size, size), geometry.scale, crop, recipe.lighting_std, normalize=train_normalize,
                                 **pca) if recipe.augment else False)
    plain = {} if recipe.augment else {"mean": device_mean, "std": device_std}
    train_loader = TensorBatchLoader(
        train_source.to(device), train_labels.to(device), batch_size=recipe.batch_size // runtime.world_size,
        shuffle=True, augment=augment, drop_last=True, seed=options.seed, rank=runtime.rank,
        world_size=runtime.world_size, channels_last=options.channels_last, **plain)
    shard = slice(runtime.rank, None, runtime.world_size)
    def evaluation(views: torch.Tensor, labels: torch.Tensor) -> TensorBatchLoader:
        return TensorBatchLoader(views[shard].to(device), labels[shard].to(device), batch_size=IMAGENET_EVAL_BATCH * 4,
                                 mean=device_mean, std=device_std, channels_last=options.channels_last)

    evals = {"test": evaluation(val_views, val.labels[picked])}
    if held_out is not None:
        evals["val"] = evaluation(centre_views(held_out.images), held_out.labels)
    description = {"train_images": len(train_labels), "test_images": len(picked), "classes": len(train.classes),
                   **({"val_images": len(held_out)} if held_out is not None else {}),
                   "lighting": {k: v.tolist() for k, v in pca.items()} or "imagenet (AlexNet)",
                   "class_to_idx": {wnid: index for index, wnid in enumerate(train.classes)}}
    return TrainingData(train_loader, evals, list(train.classes), len(train_labels), preprocess, description)


def _part(images: DecodedImages, index: torch.Tensor) -> DecodedImages:
    return DecodedImages(images.images[index], images.labels[index], images.classes, images.source,
                         [images.files[i] for i in index.tolist()])


def build_folder_data(options: RunOptions, recipe: Recipe, runtime: Runtime,
                      preprocess: Preprocessing | None = None) -> TrainingData:
    """Your photos: --data PATH holding train/<class>/<photos> and val/<class>/<photos>, or only train/, of which a
    seeded FOLDER_VAL_FRACTION of each class is held out (the file list goes to config.json). Photos of any size are
    decoded once (cached) to shorter side = the largest training scale, centre square, and held whole in memory.
    Crop, resize and mean: the --pretrained weights' (`preprocess`), else the recipe's and the photos' mean image;
    the recipe's scale range is written for its crop_size and scaled to the weights' crop."""
    root = _folder_root(options.data)
    crop, resize = (recipe.crop_size, recipe.eval_resize) if preprocess is None else (preprocess.crop,
                                                                                      preprocess.resize)
    factor = crop / recipe.crop_size
    scale = (max(crop, round(recipe.scale_min * factor)), max(crop, round(recipe.scale_max * factor)))
    eval_crop = (recipe.eval_crop or recipe.crop_size) if preprocess is None else preprocess.crop
    if preprocess is not None:  # the weights' record holds the test crop; train crops keep the recipe's ratio to it
        crop = round(preprocess.crop * recipe.crop_size / (recipe.eval_crop or recipe.crop_size))
    geometry = DecodedGeometry(scale[1], scale, crop, resize, eval_crop)  # stored at the largest shorter side drawn
    has_val = (root / "val").is_dir()
    _check_fits_in_memory(root, ("train", "val") if has_val else ("train",), geometry.image_size)
    train = read_image_folder(root, "train", geometry.image_size, fit=True)
    if len(train.classes) < 2:
        raise DatasetError(f"{root / 'train'} holds one class folder ({train.classes[0]}); a classifier needs at "
                           "least 2: add a folder per class")
    split: dict[str, Any] = {}
    if has_val:
        val = read_image_folder(root, "val", geometry.image_size, fit=True)
        source = f"{train.source}; {val.source}"
    else:
        train, val, split = hold_out(train, root)
        source = f"{train.source}; validation: {len(val)} photos held out of train/ (seed {FOLDER_SPLIT_SEED})"
    data = decoded_training_data(options, recipe, runtime, train, val, geometry, preprocess)
    data.description = {"source": source, "dataset": "folder", **data.description,
                        "geometry": {"stored": geometry.image_size, "scale": list(scale), "crop": crop,
                                     "resize": resize, "from": "the weights" if preprocess is not None
                                     else "the recipe"},
                        **({"val_split": split} if split else {})}
    return data


FOLDER_VAL_FRACTION = 0.1  # of each class's photos, held out for validation when the folder has no val/
FOLDER_SPLIT_SEED = 0  # fixed: runs of every --seed are compared on the same held-out photos
FOLDER_MEMORY_FRACTION = 0.5  # decoded photos may take at most this part of the machine's memory


def _folder_root(data: str | None) -> Path:
    """--data of `--dataset folder`, checked for its layout: one error line for each way it can be wrong."""
    layout = "PATH/train/<class>/<photos> (and optionally PATH/val/<class>/<photos>)"
    if not data:
        raise ValueError(f"--dataset folder needs --data PATH, a folder holding {layout}")
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root} does not exist; --dataset folder expects {layout}")
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"{root} has no train/ folder; --dataset folder expects {layout}")
    for split in ("train", "val"):
        folder = root / split
        loose = sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")) \
            if folder.is_dir() else []
        if loose:
            raise DatasetError(f"{folder / loose[0]} is a file, and {split}/ must hold one folder per class: move "
                               f"the photos into {folder}/<class>/")
    return root


def _check_fits_in_memory(root: Path, splits: tuple[str, ...], size: int) -> None:
    count = 0
    for split in splits:
        folder = root / split
        count += len(list_images(folder, class_folders(folder))[0])
    need = count * 3 * size * size
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > FOLDER_MEMORY_FRACTION * have:
        raise DatasetError(f"{root}: {count} photos decoded at {size}x{size} take {need / 2**30:.1f} GiB, more than "
                           f"{FOLDER_MEMORY_FRACTION:.0%} of this machine's {have / 2**30:.1f} GiB; use fewer photos")


def hold_out(train: DecodedImages, root: Path) -> tuple[DecodedImages, DecodedImages, dict[str, Any]]:
    """A seeded FOLDER_VAL_FRACTION of each class (at least one photo) held out of `train` for validation, and the
    record of the split: fraction, seed and the held-out files (relative to `root`)."""
    generator = torch.Generator().manual_seed(FOLDER_SPLIT_SEED)
    held: list[int] = []
    for label, name in enumerate(train.classes):
        members = (train.labels == label).nonzero().flatten()
        if len(members) < 2:
            raise DatasetError(f"{root / 'train' / name} holds {len(members)} photo; holding one out for validation "
                               "needs at least 2 per class: add photos, or give a val/ folder")
        count = max(1, round(FOLDER_VAL_FRACTION * len(members)))
        held += members[torch.randperm(len(members), generator=generator)[:count]].tolist()
    held_mask = torch.zeros(len(train), dtype=torch.bool)
    held_mask[held] = True
    val_index, train_index = held_mask.nonzero().flatten(), (~held_mask).nonzero().flatten()  # sorted: by class

    files = [Path(train.files[i]).relative_to(root).as_posix() for i in val_index.tolist()]
    record = {"fraction": FOLDER_VAL_FRACTION, "seed": FOLDER_SPLIT_SEED, "images": len(files), "files": files}
    return _part(train, train_index), _part(train, val_index), record


def _find_split(root: Path, split: str) -> Path:
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet-style data needs {folder}/ (<wnid>/*.JPEG folders or <wnid>_*.JPEG files); "
                                "point --data at the folder holding train/ and val/")
    return folder


def build_imagenet_data(options: RunOptions, recipe: Recipe, runtime: Runtime) -> TrainingData:
    root = Path(options.data) if options.data else datasets_root() / "imagenet"
    on_bad = options.on_bad_image
    train_set = open_image_folder(_find_split(root, "train"), on_bad_image=on_bad)
    val_set = open_image_folder(_find_split(root, "val"), class_to_idx=train_set.class_to_idx,
                                labels_file=options.val_labels, on_bad_image=on_bad)
    if recipe.crop_area or (recipe.eval_crop and recipe.eval_crop != recipe.crop_size):
        raise ValueError(f"recipe {recipe.name!r}: random-resized crops (crop_area) and a test crop other than the "
                         "training crop (eval_crop) run on decoded photo sets (imagenette, folder); for ImageNet "
                         "folders give --set crop_area= --set eval_crop=0")
    if options.subset:
        chosen = random_subset(len(train_set), options.subset, options.seed)
        train_set = ImageFolderDataset.from_samples([train_set.samples[i] for i in chosen],
                                                    train_set.classes, root=train_set.root, on_bad_image=on_bad)
    if recipe.mean == "pixel":  # Sec. 3.4: "the per-pixel mean subtracted"
        normalize = Normalize(compute_mean_image(train_set, size=recipe.crop_size, resize=recipe.eval_resize,
                                                 max_images=recipe.mean_images), std=None)
    else:
        normalize = Normalize()  # torchvision's per-channel mean/std
    device = runtime.device
    pca = {}
    if recipe.lighting_pca == "computed" and recipe.lighting_std > 0:
        eigval, eigvec = compute_pca_lighting(train_set, max_images=recipe.mean_images, resize=recipe.eval_resize,
                                              size=recipe.crop_size)
        pca = {"eigval": eigval, "eigvec": eigvec}
    if recipe.augment:
        transform = PaperTrainTransform(scale=(recipe.scale_min, recipe.scale_max), crop_size=recipe.crop_size,
                                        lighting_std=recipe.lighting_std, normalize=normalize, uint8_output=True,
                                        **pca)
    else:  # no augmentation: the evaluation view (overfitting checks, feature extraction)
        transform = _EvalGeometry(EvalTransform(recipe.eval_resize, recipe.crop_size, normalize))
    finish = transform.finish_batch
    train_loader = FolderBatchLoader(train_set.with_transform(transform), recipe.batch_size // runtime.world_size,
                                     finish=finish, device=device, seed=options.seed, rank=runtime.rank,
                                     world_size=runtime.world_size, workers=options.workers,
                                     channels_last=options.channels_last)
    eval_transform = EvalTransform(recipe.eval_resize, recipe.crop_size, normalize)
    # Val folders are sorted by class: a subset is spread over them. Each rank evaluates every world_size-th image.
    val_indices = spread_indices(len(val_set), options.eval_subset).tolist()
    val_shard = Subset(val_set, val_indices[runtime.rank::runtime.world_size])
    eval_loader = DataLoader(_with_transform(val_shard, eval_transform), batch_size=IMAGENET_EVAL_BATCH,
                             num_workers=options.workers, pin_memory=device.type == "cuda")
    preprocess = Preprocessing("imagenet", recipe.eval_resize, recipe.crop_size, tuple(normalize.channel_mean.tolist()),
                               None if normalize.std is None else tuple(normalize.std.tolist()),
                               normalize.mean if normalize.per_pixel else None)
    description = {"source": f"image folders {root} (JPEG)", "dataset": "imagenet", "train_images": len(train_set),
                   "lighting": {k: v.tolist() for k, v in pca.items()} or "imagenet (AlexNet)",
                   "test_images": len(val_indices), "classes": len(train_set.classes),
                   "class_to_idx": train_set.class_to_idx}
    data = TrainingData(train_loader, {"test": eval_loader}, list(train_set.classes), len(train_set),
                        preprocess, description)
    data.bad_images = lambda: train_set.bad_images + val_set.bad_images
    return data


class _EvalGeometry:
    """The evaluation view as a training transform with the uint8-in-workers / float-on-device split."""

    def __init__(self, transform: EvalTransform) -> None:
        self.transform = transform

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform.geometry(image)

    def finish_batch(self, images: torch.Tensor) -> torch.Tensor:
        return self.transform.normalize(images.float().div_(255))


def _with_transform(dataset: ImageFolderDataset | Subset, transform: Any) -> Any:
    if isinstance(dataset, Subset):
        return Subset(dataset.dataset.with_transform(transform), dataset.indices)
    return dataset.with_transform(transform)

