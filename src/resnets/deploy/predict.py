"""Top-k predictions for image files: the model, its preprocessing and its class names from one weight file.

Preprocessing comes from the weight file's `meta["preprocess"]` when present, else from the model family:
ImageNet: shorter side 256, centre 224 crop, /255, torchvision's per-channel mean and std.
CIFAR: shorter side 32, centre 32 crop (a 32x32 image is unchanged), /255, the per-pixel mean image when
the file stores one (Sec. 4.2), else the per-channel CIFAR-10/100 mean, no std division.
Class names: `meta["classes"]` wins; else CIFAR-10/100 names for 10/100-class CIFAR nets, the 1,000
ImageNet names (assets/imagenet_classes.txt) for 1,000-class nets, `class_<i>` otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..data.folder import BadImageError, read_image
from ..data.transforms import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD, EvalTransform, Normalize
from ..models import create_model, list_pretrained
from ..models.resnet import ResNet
from ..models.weights import model_from_weight_data, read_weight_file, shipped_name

# Per-channel means of the training sets on [0, 1] (the fallback when a file stores no mean image).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
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


@dataclass
class Preprocess:
    """uint8 RGB image -> network input: shorter side to `resize`, centre `crop`, /255, minus mean, / std."""

    kind: str  # "imagenet" or "cifar"
    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...] | None
    mean_image: torch.Tensor | None = field(default=None, repr=False)  # (3, crop, crop) on [0, 1], replaces mean

    def __post_init__(self) -> None:
        if self.resize < self.crop:
            raise ValueError(f"preprocess resize ({self.resize}) must be >= crop ({self.crop})")
        mean = self.mean_image if self.mean_image is not None else self.mean
        self._transform = EvalTransform(self.resize, self.crop, Normalize(mean, self.std))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self._transform(image)

    def to_meta(self) -> dict[str, Any]:
        """A JSON-able description (stored in exports); the mean image, if any, as nested lists."""
        meta: dict[str, Any] = {"kind": self.kind, "resize": self.resize, "crop": self.crop,
                                "mean": [round(float(m), 6) for m in self.mean],
                                "std": None if self.std is None else [round(float(s), 6) for s in self.std],
                                "scale": "pixel / 255", "channels": "RGB", "layout": "NCHW float32"}
        if self.mean_image is not None:
            meta["mean_image"] = [[[round(float(v), 6) for v in row] for row in plane] for plane in self.mean_image]
        return meta

    def describe(self) -> str:
        mean = (f"per-pixel mean image {tuple(self.mean_image.shape)}" if self.mean_image is not None
                else f"mean {[round(m, 4) for m in self.mean]}")
        std = f", / std {[round(s, 4) for s in self.std]}" if self.std is not None else ", no std division"
        return f"shorter side {self.resize}, centre crop {self.crop}, /255, minus {mean}{std}"


def default_preprocess(model: ResNet) -> Preprocess:
    spec = model.spec
    if spec.family == "cifar":
        mean = CIFAR100_MEAN if spec.num_classes == 100 else CIFAR10_MEAN
        return Preprocess("cifar", 32, 32, mean, None)
    return Preprocess("imagenet", 256, 224, IMAGENET_RGB_MEAN, IMAGENET_RGB_STD)


def _floats(value: Any, what: str, source: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = tuple(float(v) for v in (value.tolist() if isinstance(value, torch.Tensor) else value))
    if len(values) != 3:
        raise ValueError(f"{source}: preprocess {what} must have 3 values (R, G, B), got {len(values)}")
    return values


def preprocess_from_meta(meta: dict[str, Any], model: ResNet, source: str = "weights") -> Preprocess:
    """The weight file's preprocessing with the family's defaults filling what it leaves out.

    Accepted keys: kind, resize (shorter side), crop (or size), mean, std (per
    channel, on [0, 1]; values above 1 are taken as 0..255 and divided by 255), mean_image (3 x H x W).
    """
    base = default_preprocess(model)
    given = meta.get("preprocess") or {}
    if not isinstance(given, dict):
        raise ValueError(f"{source}: meta['preprocess'] must be a dict, found {type(given).__name__}")
    crop = int(given.get("crop", given.get("size", base.crop)))
    # Without an explicit resize keep the family's resize/crop ratio (256/224 ImageNet, 1 CIFAR).
    resize = int(given.get("resize", round(crop * base.resize / base.crop)))
    mean = _floats(given.get("mean"), "mean", source) or base.mean
    std = _floats(given["std"], "std", source) if "std" in given else base.std
    if max(mean) > 1.5:  # a 0..255 mean (e.g. 125.3, 123.0, 113.9): rescale mean and std alike
        mean = tuple(m / 255 for m in mean)
        std = None if std is None else tuple(s / 255 for s in std)
    mean_image = given.get("mean_image")
    if mean_image is not None:
        mean_image = torch.as_tensor(mean_image, dtype=torch.float32)
        if mean_image.shape != (3, crop, crop):
            raise ValueError(f"{source}: preprocess mean_image has shape {tuple(mean_image.shape)}, expected "
                             f"(3, {crop}, {crop}) to match the crop")
        if float(mean_image.max()) > 1.5:
            mean_image = mean_image / 255
    return Preprocess(str(given.get("kind", base.kind)), resize, crop, mean, std, mean_image)


def class_names(meta: dict[str, Any], model: ResNet, source: str = "weights") -> list[str]:
    spec = model.spec
    classes = meta.get("classes")
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(classes) != spec.num_classes:
            raise ValueError(f"{source}: meta['classes'] names {len(classes)} classes but the model has "
                             f"{spec.num_classes} outputs; fix or remove meta['classes']")
        return classes
    if spec.family == "cifar" and spec.num_classes == 10:
        return list(CIFAR10_CLASSES)
    if spec.family == "cifar" and spec.num_classes == 100:
        return list(CIFAR100_CLASSES)
    if spec.num_classes == 1000:
        return imagenet_classes()
    return [f"class_{i}" for i in range(spec.num_classes)]


@dataclass
class Predictor:
    """A model in eval mode with the preprocessing and class names it was trained with."""

    model: torch.nn.Module
    preprocess: Preprocess
    classes: list[str]
    meta: dict[str, Any]
    source: str

    @property
    def spec(self) -> Any:
        return self.model.spec

    @property
    def preprocess_note(self) -> str:
        """Where the preprocessing came from; a guess (family defaults) is worth telling the user about."""
        if self.meta.get("preprocess"):
            return "from the weight file"
        return f"{self.spec.family} defaults: {self.source} stores no meta['preprocess']"


def resolve_weights_path(checkpoint: str | Path) -> Path:
    """A run directory -> its model.pt, else checkpoints/last.pt (an unfinished run); a file -> itself."""
    from ..evaluate.run import resolve_weights

    return resolve_weights(Path(checkpoint))


def load_predictor(weights: str | Path | None = None, checkpoint: str | Path | None = None,
                   model_name: str | None = None, pretrained: bool | str = False) -> Predictor:
    """One of: a weight file, a run directory/checkpoint, or a model name with the package's shipped weights
    (pretrained=True: the paper recipe's; a tag such as "fast": another recipe's)."""
    if sum(x is not None for x in (weights, checkpoint, model_name)) != 1:
        raise ValueError("give exactly one of --weights FILE, --checkpoint DIR or --model NAME --pretrained")
    if model_name is not None:
        if not pretrained:
            raise ValueError(f"--model {model_name} without --pretrained would predict with random weights; add "
                             "--pretrained, or use --weights FILE / --checkpoint DIR")
        model = create_model(model_name, pretrained=pretrained)
        meta = dict(list_pretrained().get(shipped_name(model_name, pretrained)) or {})
        source = f"shipped weights {shipped_name(model_name, pretrained)}"
    else:
        path = Path(weights) if weights is not None else resolve_weights_path(checkpoint)
        contents = read_weight_file(path)
        model = model_from_weight_data(contents, source=f"weights in {path}")
        meta = dict(contents.get("meta") or {})
        source = str(path)
    model.eval()
    return Predictor(model, preprocess_from_meta(meta, model, source), class_names(meta, model, source), meta, source)


@dataclass
class Prediction:
    image: str
    top: list[dict[str, Any]]  # [{"rank", "index", "class", "probability"}], most probable first

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "top": self.top}


@dataclass
class ImageFailure:
    image: str
    reason: str

    @property
    def message(self) -> str:
        return f"{self.image}: cannot read image: {self.reason}; skipped it (replace or remove the file)"


def load_images(paths: list[str | Path], preprocess: Preprocess) -> tuple[list[tuple[str, torch.Tensor]],
                                                                           list[ImageFailure]]:
    """Decode and preprocess each file; unreadable files become ImageFailure entries instead of exceptions."""
    loaded, failed = [], []
    for path in paths:
        name = str(path)
        try:
            loaded.append((name, preprocess(read_image(path))))
        except BadImageError as exc:
            failed.append(ImageFailure(name, exc.reason))
        except (OSError, ValueError) as exc:
            failed.append(ImageFailure(name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    return loaded, failed


@torch.no_grad()
def predict_tensors(model: torch.nn.Module, inputs: torch.Tensor, classes: list[str], topk: int = 5) -> list[list]:
    """Top-k (index, name, probability) per input row, from softmax over the logits in fp32."""
    probs = torch.softmax(model(inputs).float(), dim=1)
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [[{"rank": r + 1, "index": int(i), "class": classes[int(i)], "probability": float(p)}
             for r, (p, i) in enumerate(zip(row_p, row_i, strict=True))]
            for row_p, row_i in zip(values, indices, strict=True)]


def predict_files(predictor: Predictor, paths: list[str | Path], topk: int = 5, batch_size: int = 32,
                  fuse: bool = True) -> tuple[list[Prediction], list[ImageFailure]]:
    """Predictions for every readable file (in input order) and a failure entry for every unreadable one."""
    if topk < 1:
        raise ValueError(f"--topk must be >= 1, got {topk}")
    from .fuse import fuse_for_inference

    # Folding BN changes nothing but speed (tested to 1e-4); channels_last helps oneDNN on CPU.
    model = fuse_for_inference(predictor.model) if fuse else predictor.model.eval()
    loaded, failed = load_images(paths, predictor.preprocess)
    predictions = []
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start:start + batch_size]
        batch = torch.stack([tensor for _, tensor in chunk])
        for (name, _), top in zip(chunk, predict_tensors(model, batch, predictor.classes, topk), strict=True):
            predictions.append(Prediction(name, top))
    return predictions, failed


def format_prediction(prediction: Prediction) -> str:
    lines = [prediction.image]
    lines += [f"  {t['rank']:>2}. {t['probability']:7.2%}  {t['class']} ({t['index']})" for t in prediction.top]
    return "\n".join(lines)


def prediction_json(prediction: Prediction) -> str:
    return json.dumps(prediction.to_json())
