"""Top-k predictions for image files: the model, its preprocessing and its class names from one weight file.

Preprocessing is the weights' own record (`data.preprocess.Preprocessing`, family defaults for files without one);
class names are `meta["classes"]`, else the family's (`data.classes.class_names`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..data.classes import class_names
from ..data.folder import BadImageError, read_image
from ..data.preprocess import Preprocessing, preprocessing_of
from ..models import create_model, load_model
from ..runs import resolve_weights
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
        source = f"shipped weights {model_name} (pretrained={pretrained!r})"
    else:
        path = Path(weights) if weights is not None else resolve_weights(checkpoint)
        model = load_model(path)
        source = str(path)
    model.eval()
    return Predictor(model, preprocessing_of(model), class_names(model.meta, model.spec, source), model.meta, source)


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


def predict_files(predictor: Predictor, paths: list[str | Path], topk: int = 5, batch_size: int = 32,
                  prepare: Callable[[torch.nn.Module], torch.nn.Module] | None = None
                  ) -> tuple[list[Prediction], list[ImageFailure]]:
    """Predictions for every readable file (in input order) and a failure entry for every unreadable one.

    `prepare` makes the model to run from the eval-mode model (default: optimize_for_inference in fp32, the fastest
    path measured for this device; its outputs match the eager model to 1e-4)."""
    if topk < 1:
        raise ValueError(f"--topk must be >= 1, got {topk}")
    if prepare is None:
        prepare = partial(optimize_for_inference, batch_size=batch_size)
    model = prepare(predictor.model.eval())
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
