"""ONNX and TorchScript export of a model with BN folded, checked against the PyTorch model before it is kept.

The exported graph takes a float32 NCHW batch that is already preprocessed (resize, crop, /255, mean/std;
see the `resnets.preprocess` entry of the ONNX metadata_props or `resnets_meta.json` inside the TorchScript
archive) and returns logits; the batch dimension is dynamic. The file is written next to its destination,
verified there (onnxruntime or torch.jit.load on real photos when available), and only then renamed into
place, so a failed export never leaves a broken file at the output path.
"""

from __future__ import annotations

import copy
import io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..data.paths import datasets_root
from ..models import model_config
from ..version import __version__
from .fuse import fuse_for_inference
from .onnx import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, OnnxRuntimeModule, onnx_bytes, ort_session
from .predict import Predictor, load_images

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
DEFAULT_ATOL = 1e-4
TORCHSCRIPT_META = "resnets_meta.json"


class ExportError(ValueError):
    """Export or its verification failed; the message says what differed and what to try."""


@dataclass
class Verification:
    runtime: str  # "onnxruntime" or "torch.jit"
    images: int
    source: str  # which inputs were used
    max_abs_diff: float
    top1_agree: int

    @property
    def ok(self) -> bool:
        return self.top1_agree == self.images

    def summary(self) -> str:
        return (f"{self.runtime}: {self.top1_agree}/{self.images} top-1 agree, max |logit diff| "
                f"{self.max_abs_diff:.2e} on {self.source}")


def export_metadata(predictor: Predictor) -> dict[str, str]:
    """String key/values describing how to feed the exported graph (ONNX metadata_props / TorchScript extra file)."""
    model = predictor.model
    return {
        "resnets.version": __version__,
        "resnets.model": model.spec.name,
        "resnets.model_config": json.dumps(model_config(model)),
        "resnets.preprocess": json.dumps(predictor.preprocess.to_json()),
        "resnets.preprocess_text": predictor.preprocess.describe(),
        "resnets.input": f"{INPUT_NAME}: float32 [batch, 3, {predictor.preprocess.crop}, {predictor.preprocess.crop}] "
                         "RGB, preprocessed as resnets.preprocess says; batch is dynamic",
        "resnets.output": f"{OUTPUT_NAME}: float32 [batch, {model.spec.num_classes}] logits (apply softmax)",
        "resnets.classes": json.dumps(predictor.classes),
        "resnets.source": predictor.source,
    }


def default_verify_images(count: int = 8) -> list[Path]:
    """Up to `count` photos of the ImageNet sample beside the project (empty when it is absent)."""
    folder = datasets_root() / "imagenet-sample"
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    step = max(1, len(files) // max(count, 1))
    return files[::step][:count]


def verification_inputs(predictor: Predictor, images: list[Path] | None = None,
                        count: int = 8) -> tuple[torch.Tensor, str]:
    """Preprocessed real photos (the given ones, else the ImageNet sample), else seeded noise with a note."""
    paths = list(images) if images else default_verify_images(count)
    if paths:
        loaded, failed = load_images(paths, predictor.preprocess)
        if failed:
            raise ExportError(failed[0].message)
        return torch.stack([t for _, t in loaded]), f"{len(loaded)} photos ({Path(paths[0]).parent})"
    size = predictor.preprocess.crop
    noise = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(0))
    return noise, f"{count} random inputs (no photos found under {datasets_root() / 'imagenet-sample'})"


def _torchscript_bytes(model: torch.nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated but remains the portable C++/mobile path
        # Traced, not scripted: the forward loops over stage names; the traced graph is shape-generic in batch.
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_META: json.dumps(metadata)})
    return buffer.getvalue()


def run_exported(path: Path, fmt: Format, inputs: torch.Tensor) -> torch.Tensor:
    """Logits of an exported file on `inputs` (onnxruntime on CPU for ONNX, torch.jit.load for TorchScript)."""
    if fmt == "onnx":
        return OnnxRuntimeModule(ort_session(path))(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; TorchScript files remain
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(inputs)


def verify_export(path: Path, fmt: Format, reference: torch.nn.Module, inputs: torch.Tensor, source: str,
                  atol: float = DEFAULT_ATOL) -> Verification:
    """Compare the exported file with the unfused PyTorch model run in float64; raise ExportError beyond `atol`.

    The reference is float64 because two fp32 implementations of ResNet-50 already differ by ~1e-4 on large
    logits (summation order); against float64 each stays near half of that, so `atol` measures the export.
    """
    with torch.no_grad():
        expected = copy.deepcopy(reference).eval().double()(inputs.double()).float()
    got = run_exported(path, fmt, inputs).float()
    if got.shape != expected.shape:
        raise ExportError(f"exported {fmt} returns shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}")
    check = Verification("onnxruntime" if fmt == "onnx" else "torch.jit", len(inputs), source,
                         float((got - expected).abs().max()), int((got.argmax(1) == expected.argmax(1)).sum()))
    if not check.ok or check.max_abs_diff >= atol:
        raise ExportError(f"verification failed: {check.summary()} (need all top-1 equal and diff < {atol:g}); "
                          "the file was not written. Try another --opset, or raise --atol if the difference is "
                          "fp32 rounding")
    return check


def export_model(predictor: Predictor, out: str | Path, fmt: Format = "onnx", opset: int = DEFAULT_OPSET,
                 verify: bool = True, images: list[Path] | None = None, atol: float = DEFAULT_ATOL,
                 extra_metadata: dict[str, Any] | None = None) -> tuple[Path, Verification | None]:
    """Write `predictor.model` (BN folded, fp32, dynamic batch) to `out` in `fmt`; verify before renaming."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"--out {out} is a directory; give a file name such as {out / ('model.' + fmt[:4])}")
    reference = predictor.model.eval()
    # Contiguous (NCHW) weights: channels_last is a CPU-kernel preference that exported graphs should not carry.
    fused = fuse_for_inference(reference, channels_last=False)
    metadata = export_metadata(predictor) | {k: str(v) for k, v in (extra_metadata or {}).items()}
    inputs, source = verification_inputs(predictor, images)
    example = inputs[:1]
    data = onnx_bytes(fused, example, opset, metadata) if fmt == "onnx" else _torchscript_bytes(fused, example,
                                                                                                  metadata)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        check = verify_export(Path(tmp), fmt, reference, inputs, source, atol) if verify else None
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out, check


def read_metadata(path: str | Path) -> dict[str, str]:
    """The resnets.* metadata of an exported file (ONNX metadata_props or the TorchScript extra file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported file {path} does not exist")
    if path.suffix == ".onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    extra = {TORCHSCRIPT_META: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[TORCHSCRIPT_META] or "{}")
