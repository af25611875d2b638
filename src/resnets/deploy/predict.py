"""Top-k predictions for image files: the model, its preprocessing and its class names from one weight file.

Preprocessing is the weights' own record (`data.preprocess.Preprocessing`, family defaults for files without one);
class names are `meta["classes"]`, else the family's (`data.classes.class_names`). Photos are decoded by the package's
one decoder (`data.folder.read_image`: EXIF orientation applied, so a phone photo stored sideways is seen upright),
a batch at a time; folders are walked for image files (`image_paths`) and the results can be written as CSV.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..data.classes import class_names
from ..data.folder import IMAGE_EXTENSIONS, BadImageError, read_image
from ..data.preprocess import Preprocessing, preprocessing_of
from ..io import atomic_write_text
from ..models import Pretrained, load_model, resolve_pretrained
from .optimize import optimize_for_inference


@dataclass
class Predictor:
    """A model in eval mode with the preprocessing and class names it was trained with."""

    model: torch.nn.Module
    preprocess: Preprocessing
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


def load_predictor(pretrained: bool | str | Path | Pretrained | None = None, model: str | None = None, *,
                   weights: str | Path | None = None, checkpoint: str | Path | None = None) -> Predictor:
    """The weights `pretrained` names (anything `resolve_pretrained` takes: `resnet18.imagenette`, a tag of `model`,
    a weight file, a run directory) in eval mode with their preprocessing and class names.
    `weights=` / `checkpoint=` are the old spellings of `pretrained=` (one release, with a FutureWarning)."""
    for old, value in (("weights", weights), ("checkpoint", checkpoint)):
        if value is not None:
            warnings.warn(f"load_predictor({old}=...) is deprecated; write load_predictor({str(value)!r})",
                          FutureWarning, stacklevel=2)
            if pretrained is not None:
                raise ValueError(f"give the weights once: pretrained= or {old}=, not both")
            pretrained = value
    if pretrained is None or pretrained is False:
        raise ValueError(f"{'--model ' + model + ' without ' if model else 'no '}--pretrained would predict with "
                         "random weights; give --pretrained MODEL.TAG|FILE|RUN")
    source = resolve_pretrained(pretrained, model)
    network = load_model(source).eval()
    where = f"shipped weights {source.name}" if source.shipped else str(source.path)
    return Predictor(network, preprocessing_of(network), class_names(network.meta, network.spec, where),
                     network.meta, where)


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


def load_images(paths: list[str | Path], preprocess: Preprocessing) -> tuple[list[tuple[str, torch.Tensor]],
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


def image_paths(inputs: list[str | Path]) -> list[Path]:
    """Files as given, and every image file under each folder (recursively, sorted; hidden files and folders
    skipped); a folder without images is one error line."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if not item.is_dir():
            found.append(item)  # a missing or unreadable file is reported by predict_files, not here
            continue
        inside = sorted(_images_under(item))
        if not inside:
            raise FileNotFoundError(f"folder {item} holds no image files ({', '.join(IMAGE_EXTENSIONS)}), "
                                    "also in its subfolders")
        found += inside
    return found


def _images_under(folder: Path) -> Iterator[Path]:
    for root, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        yield from (Path(root) / name for name in names
                    if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."))


def predict_files(predictor: Predictor, paths: list[str | Path], topk: int = 5, batch_size: int = 32,
                  prepare: Callable[[torch.nn.Module], torch.nn.Module] | None = None
                  ) -> tuple[list[Prediction], list[ImageFailure]]:
    """Predictions for every readable file (in input order) and a failure entry for every unreadable one; files are
    decoded a batch at a time, so a folder of any size fits in memory.

    `prepare` makes the model to run from the eval-mode model (default: optimize_for_inference in fp32, the fastest
    path measured for this device; its outputs match the eager model to 1e-4)."""
    if topk < 1:
        raise ValueError(f"--topk must be >= 1, got {topk}")
    if prepare is None:
        prepare = partial(optimize_for_inference, batch_size=batch_size)
    model = prepare(predictor.model.eval())
    predictions, failed = [], []
    for start in range(0, len(paths), batch_size):
        loaded, failures = load_images(paths[start:start + batch_size], predictor.preprocess)
        failed += failures
        if not loaded:
            continue
        batch = torch.stack([tensor for _, tensor in loaded])
        for (name, _), top in zip(loaded, predict_tensors(model, batch, predictor.classes, topk), strict=True):
            predictions.append(Prediction(name, top))
    return predictions, failed


def csv_header(topk: int) -> list[str]:
    return ["path"] + [f"top{rank}_{field}" for rank in range(1, topk + 1) for field in ("class", "probability")]


def write_predictions_csv(predictions: list[Prediction], path: str | Path, topk: int) -> Path:
    """One row per photo: its path, then the top-k classes with their probabilities, most probable first (top1_class,
    top1_probability, top2_class, ...); written whole to a temporary file and renamed, so a reader never sees half."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(csv_header(topk))
    for prediction in predictions:
        cells = [value for top in prediction.top for value in (top["class"], f"{top['probability']:.6f}")]
        writer.writerow([prediction.image, *cells, *[""] * (2 * topk - len(cells))])  # fewer classes than topk
    return atomic_write_text(Path(path), text.getvalue())


def format_prediction(prediction: Prediction) -> str:
    lines = [prediction.image]
    lines += [f"  {t['rank']:>2}. {t['probability']:7.2%}  {t['class']} ({t['index']})" for t in prediction.top]
    return "\n".join(lines)


def prediction_json(prediction: Prediction) -> str:
    return json.dumps(prediction.to_json())
