"""Class names in label order: CIFAR-10/100's official orders and the 1,000 ImageNet classes (shipped data files).

A weight file's `meta["classes"]` wins; these are the fallbacks for files without one.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The official fine label order (meta file of cifar-100-python), alphabetical.
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)


def _asset_lines(name: str) -> list[str]:
    text = (resources.files("resnets") / "assets" / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names in label order (torchvision's names), from the shipped data file."""
    return _asset_lines("imagenet_classes.txt")


def imagenet_wnids() -> list[str]:
    """The 1,000 WordNet ids in label order (sorted, as ImageNet's devkit orders them)."""
    return _asset_lines("imagenet_wnids.txt")


def class_names(meta: dict[str, Any], spec: Any, source: str = "weights") -> list[str]:
    """`meta['classes']` (checked against the network's outputs; ImageNet wnids, as an Imagenette run stores them,
    become their English names), else the family's names, else class_<i>."""
    classes = meta.get("classes")
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(classes) != spec.num_classes:
            raise ValueError(f"{source}: meta['classes'] names {len(classes)} classes but the model has "
                             f"{spec.num_classes} outputs; fix or remove meta['classes']")
        wnids = {wnid: index for index, wnid in enumerate(imagenet_wnids())}
        if all(name in wnids for name in classes):
            names = imagenet_classes()
            return [names[wnids[name]] for name in classes]
        return classes
    if spec.family == "cifar" and spec.num_classes == 10:
        return list(CIFAR10_CLASSES)
    if spec.family == "cifar" and spec.num_classes == 100:
        return list(CIFAR100_CLASSES)
    if spec.num_classes == 1000:
        return imagenet_classes()
    return [f"class_{i}" for i in range(spec.num_classes)]
