"""The fastest inference form this library knows for a model, a device, a precision and a batch size.

`optimize_for_inference` folds BN into the convolutions (fuse.py) and hands the result to the backend that
`choose_backend` picks. The rule comes from `benchmarks/inference.py` (ResNet-50 v1.5, 224x224, 2 threads,
medians of interleaved rounds; full table in docs/benchmarks.md and benchmarks/results/):

- CPU fp32: onnxruntime on our exported graph, when onnxruntime is installed: 1.00x by definition, where
  PyTorch's fp32 paths measured 0.60-0.81x of it (AVX-512) and 0.65-0.80x (AVX2): oneDNN's convolutions lose to
  onnxruntime's MLAS. Without onnxruntime: TorchScript freeze ("jit"), as fast as inductor without its compile wait.
- CPU int8: post-training static quantisation through PyTorch's x86 path (PT2E export, torchao's
  X86InductorQuantizer, calibration on real training images, lowered to oneDNN int8 kernels for a fixed batch
  size): 2.26x onnxruntime fp32 at batch 16 and 1.61x at batch 1 with VNNI. CPUs without VNNI get 7-bit
  activations (reduce_range), without which ResNet-20 lost 2.2 points of CIFAR-10 accuracy (1.48x there).
- CPU bf16: inductor with bf16 weights where the CPU has native bf16 (avx512_bf16 / AMX): 1.70x onnxruntime fp32
  at batch 16 on avx512_bf16 without AMX. Elsewhere bf16 is emulated and several times slower than fp32
  (measured 12x in training), so it is built as asked with a warning.
- CUDA: inductor (torch.compile with freezing), channels_last; fp16/bf16 weights. Not measured here (no GPU).

Compile artefacts are cached so a CLI call does not pay them twice, under cache_dir()/inference: ONNX graphs
named by a digest of the weights and of their own bytes; int8 calibration results (activation scales, JSON with
a digest); inductor keeps its own FX graph cache across processes. A damaged cache file is rebuilt, never used.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.folder import IMAGE_FORMATS, read_image
from ..data.paths import cache_dir, datasets_root
from ..data.preprocess import preprocessing_of
from ..io import UnreadableFileError, atomic_write_bytes, atomic_write_json, read_json
from ..models import model_config
from ..runtime import cpu_has_native_bf16, cpu_has_vnni
from .fuse import compile_for_inference, fuse_for_inference
from .onnx import DEFAULT_OPSET, OnnxRuntimeModule, onnx_bytes, ort_session

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")
BACKENDS: tuple[str, ...] = ("auto", "eager", "jit", "inductor", "onnxruntime", "pt2e")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CALIBRATION_IMAGES = 512


@dataclass
class Plan:
    backend: str
    reason: str


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def choose_backend(device: torch.device, precision: str) -> Plan:
    """The backend measured fastest for this device and precision (see the module docstring)."""
    if precision == "int8":
        if device.type != "cpu":
            raise ValueError("int8 inference runs on the CPU (oneDNN x86 kernels); on CUDA use --precision bf16/fp16")
        return Plan("pt2e", "int8: PT2E static quantisation, oneDNN x86 kernels")
    if device.type == "cuda":
        return Plan("inductor", "CUDA: torch.compile with freezing")
    if precision == "fp16":
        raise ValueError("fp16 inference is for CUDA; on the CPU use fp32, bf16 or int8")
    if precision == "bf16":
        if cpu_has_native_bf16():
            return Plan("inductor", "bf16 on a CPU with native bf16: torch.compile with freezing")
        return Plan("eager", "bf16 is emulated on this CPU (no avx512_bf16/AMX) and slower than fp32")
    if _installed("onnxruntime"):
        return Plan("onnxruntime", "CPU fp32: onnxruntime measured fastest (benchmarks/inference.py)")
    return Plan("jit", "CPU fp32 without onnxruntime: TorchScript freeze")


class InferenceModel(nn.Module):
    """An optimised model: `forward` runs the fast path; parameters, `spec`, `meta` and `forward_fcn` come from
    the BN-folded eager copy (`source`), so evaluation protocols that need those still work."""

    def __init__(self, runner: nn.Module | Any, source: nn.Module, precision: str, plan: Plan,
                 build_seconds: float, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.source = source
        self.runner = runner
        self.precision, self.backend, self.reason = precision, plan.backend, plan.reason
        self.build_seconds = build_seconds
        self.spec, self.meta = getattr(source, "spec", None), getattr(source, "meta", {})
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
                # Built for one input size (ONNX and int8 graphs have a fixed H x W): others run the folded copy.
                return self.source(x).float()
            return self.runner(x).float()

    def forward_fcn(self, x: torch.Tensor) -> torch.Tensor:
        return self.source.forward_fcn(x.to(next(self.source.parameters()).dtype)).float()

    def train(self, mode: bool = True) -> InferenceModel:
        # Its parts are in inference form for good (an exported int8 graph even refuses train()), so no recursion.
        if mode:
            raise ValueError("an InferenceModel only runs inference; train the model it was made from")
        return self

    def describe(self) -> str:
        return f"{self.precision} via {self.backend} ({self.reason}; built in {self.build_seconds:.1f} s)"


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the model's configuration and every tensor of its state_dict, in order."""
    digest = hashlib.sha256(json.dumps(model_config(model), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def _onnx_runner(model: nn.Module, image_size: int, cache: bool) -> OnnxRuntimeModule:
    """onnxruntime on the BN-folded graph, read from the cache when the same weights were exported before.

    A cached file is named <model>-<key>-<digest of its bytes>.onnx: a file whose bytes no longer match its name
    (a flipped bit, a truncated write) is deleted and rebuilt, never run.
    """
    import onnxruntime

    key = (f"{weights_digest(model)}-{image_size}px-opset{DEFAULT_OPSET}-torch{torch.__version__}"
           f"-ort{onnxruntime.__version__}")
    stem = f"{model.spec.name}-{hashlib.sha256(key.encode()).hexdigest()[:20]}"
    folder = cache_dir() / "inference"
    for path in sorted(folder.glob(f"{stem}-*.onnx")) if cache else []:
        data = path.read_bytes()
        if path.stem.endswith(hashlib.sha256(data).hexdigest()[:16]):
            return OnnxRuntimeModule(ort_session(data))
        warnings.warn(f"cached ONNX graph {path} does not match its digest (damaged); rebuilding it", stacklevel=3)
        path.unlink(missing_ok=True)
    data = onnx_bytes(fuse_for_inference(model, channels_last=False), torch.zeros(1, 3, image_size, image_size))
    if cache:
        atomic_write_bytes(folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:16]}.onnx", lambda f: f.write(data))
    return OnnxRuntimeModule(ort_session(data))


def default_calibration_folder(model: nn.Module) -> Path:
    """Training images of the data the model's family is trained on: CIFAR-10 train, else Imagenette train."""
    root = datasets_root()
    if model.spec.family == "cifar":
        return root / "cifar10-jpeg" / "train"
    return root / "imagenette" / "train" if (root / "imagenette" / "train").is_dir() else root / "imagenet-sample"


def calibration_files(model: nn.Module, folder: str | Path | None = None,
                      count: int = CALIBRATION_IMAGES) -> list[Path]:
    """`count` image files spread evenly over `folder` (recursively, sorted); default: the family's training set."""
    folder = Path(folder) if folder is not None else default_calibration_folder(model)
    if not folder.is_dir():
        raise FileNotFoundError(f"int8 calibration needs real images: {folder} is not a folder; pass calibration=DIR "
                                "(--calibration DIR) with a few hundred training images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_FORMATS)
    if not files:
        raise FileNotFoundError(f"int8 calibration: no images ({', '.join(IMAGE_FORMATS)}) under {folder}")
    return files[::max(1, len(files) // count)][:count]


def calibration_images(model: nn.Module, folder: str | Path | None = None, count: int = CALIBRATION_IMAGES,
                       files: Sequence[Path] | None = None) -> torch.Tensor:
    """The `calibration_files` (or the given `files`), decoded and preprocessed as the model's weights expect."""
    preprocess = preprocessing_of(model)
    files = files if files is not None else calibration_files(model, folder, count)
    return torch.stack([preprocess(read_image(p)) for p in files])


_QDQ = ("quantize_per_tensor.default", "dequantize_per_tensor.default")


def _activation_qparams(graph: torch.fx.GraphModule) -> list[list] | None:
    """[node name, scale, zero point] of every per-tensor (de)quantize node: all that calibration decided (weights
    are quantized per channel from the weights themselves). None if a scale is a tensor, not a number."""
    found = [[n.name, n.args[1], n.args[2]] for n in graph.graph.nodes if str(n.target).endswith(_QDQ)]
    return found if all(isinstance(s, float) and isinstance(z, int) for _, s, z in found) else None


def _set_activation_qparams(graph: torch.fx.GraphModule, qparams: list[list]) -> bool:
    """Write cached scales into a graph converted from the same model; False (nothing written) if it differs."""
    nodes = [n for n in graph.graph.nodes if str(n.target).endswith(_QDQ)]
    if [n.name for n in nodes] != [name for name, _, _ in qparams]:
        return False
    for node, (_, scale, zero_point) in zip(nodes, qparams, strict=True):
        node.args = (node.args[0], float(scale), int(zero_point), *node.args[3:])
    graph.recompile()
    return True


def _calibration_key(model: nn.Module, calibration: torch.Tensor | Sequence[Path], reduce_range: bool,
                     size: int) -> str:
    digest = hashlib.sha256(f"{weights_digest(model)}-{size}px-{reduce_range}-torch{torch.__version__}".encode())
    if isinstance(calibration, torch.Tensor):
        digest.update(calibration.contiguous().numpy().tobytes())
    else:  # the files themselves: names, sizes and modification times, without decoding them; and the preprocessing
        # that turns them into inputs (the same weights may come with another record, or none: the family's defaults)
        record = preprocessing_of(model)
        digest.update(repr(record).encode())  # every field but the mean image, hashed next
        if record.mean_image is not None:
            digest.update(record.mean_image.contiguous().numpy().tobytes())
        for path in calibration:
            stat = path.stat()
            digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _qparams_digest(qparams: list[list]) -> str:
    return hashlib.sha256(json.dumps(qparams).encode()).hexdigest()


def _read_qparams(path: Path) -> list[list] | None:
    """Cached activation scales, or None (absent; or damaged: then with a warning, and the file is removed)."""
    if not path.is_file():
        return None
    try:
        document = read_json(path, "int8 calibration cache")
        if document["sha256"] == _qparams_digest(document["qparams"]):
            return document["qparams"]
    except (UnreadableFileError, KeyError, TypeError):
        pass
    warnings.warn(f"int8 calibration cache {path} is damaged (digest mismatch); calibrating again", stacklevel=4)
    path.unlink(missing_ok=True)
    return None


def _int8_runner(model: nn.Module, calibration: torch.Tensor | str | Path | None, batch_size: int, size: int,
                 cache: bool) -> nn.Module:
    """PT2E: export at `batch_size`, observe the calibration batches, convert, lower to oneDNN int8 kernels.

    Strict (dynamo) export: the non-strict default merges every call of a shared ReLU module into one partition,
    which the x86 quantizer rejects. The lowering is torchao's `lower_pt2e_quantized_to_x86` (freezing passes and
    constant folding) on a graph of fixed batch size: the same graph exported with a dynamic batch ran 4.5x slower
    at batch 1 (ResNet-50, 10.4 vs 46.4 images/s, 2 threads, AVX-512 VNNI), so other batch sizes are run in
    chunks of `batch_size` (StaticBatch). Calibration (minutes for ResNet-50 on 512 photos) is cached as the
    activation scales it found, in JSON under cache_dir()/inference, keyed by the weights and the calibration
    images (a folder's: its files and the preprocessing that reads them).
    """
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    # Without VNNI, 8-bit activations overflow oneDNN's int16 pair sums: measured on AVX2, ResNet-20 int8 lost
    # 2.2 points of CIFAR-10 test accuracy with 8 bits and 0.09 with 7 (reduce_range).
    reduce_range = not cpu_has_vnni()
    config = x86.get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
    quantizer = x86.X86InductorQuantizer().set_global(config)
    # A folder is listed once: its files name the cache entry and, on a miss, are what gets decoded.
    source = calibration if isinstance(calibration, torch.Tensor) else calibration_files(model, calibration)
    if isinstance(source, torch.Tensor) and (source.dim() != 4 or source.shape[0] == 0
                                             or source.shape[1:] != (3, size, size)):
        raise ValueError(f"int8 calibration images must be a non-empty N x 3 x {size} x {size} tensor, preprocessed "
                         f"as the model's input; got {tuple(source.shape)} (or pass calibration=DIR, a folder of "
                         "training images)")
    key = _calibration_key(model, source, reduce_range, size)
    path = cache_dir() / "inference" / f"{model.spec.name}-int8-{key}.json"
    cached = _read_qparams(path) if cache else None
    device = next(model.parameters()).device
    example = (torch.zeros(batch_size, 3, size, size, device=device),)
    decompositions = {op: fn for op, fn in torch.export.default_decompositions().items()
                      if torch._export.utils._is_cia_op(op)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.export.export(copy.deepcopy(model).eval(), example, strict=True).module()
        observed = prepare_pt2e(graph, quantizer)
        if cached is None:
            images = source if isinstance(source, torch.Tensor) else calibration_images(model, files=source)
            for chunk in _fixed_batches(images.to(device), batch_size):
                observed(chunk)
        else:
            observed(*example)  # any input initialises the observers; the cached scales replace what they saw
        quantized = convert_pt2e(observed)
        if cached is not None and not _set_activation_qparams(quantized, cached):
            warnings.warn(f"{path} does not fit this model's graph; calibrating again", stacklevel=3)
            return _int8_runner(model, calibration, batch_size, size, cache=False)
        qparams = _activation_qparams(quantized)
        if cache and cached is None and qparams is not None:
            atomic_write_json(path, {"qparams": qparams, "sha256": _qparams_digest(qparams)})
        lowered = torch.export.export(quantized, example, strict=True)
        lowered = lowered.run_decompositions(decompositions).module()
        freezing_passes(lowered, example)
        constant_fold(lowered)
    return StaticBatch(lowered, batch_size)


def _fixed_batches(images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """`images` in batches of exactly `batch_size`, the last one filled up with images from the start (repeating
    real images leaves the observed ranges as they are, where zero padding would not)."""
    count = -(-len(images) // batch_size) * batch_size
    return list(images[torch.arange(count) % len(images)].split(batch_size))


class StaticBatch(nn.Module):
    """Runs a graph built for one batch size on any batch: in chunks of that size, the last one zero-padded and
    its padding dropped from the output (images are independent in inference, so padding changes nothing)."""

    def __init__(self, graph: nn.Module, batch_size: int) -> None:
        super().__init__()
        self.graph, self.batch_size = graph, batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for chunk in x.split(self.batch_size):
            missing = self.batch_size - len(chunk)
            if missing:
                chunk = torch.cat([chunk, chunk.new_zeros(missing, *chunk.shape[1:])])
            outputs.append(self.graph(chunk)[:self.batch_size - missing])
        return torch.cat(outputs)


def optimize_for_inference(model: nn.Module, precision: str = "fp32", batch_size: int = 16, *,
                           device: str | torch.device | None = None, backend: str = "auto",
                           image_size: int | None = None, calibration: torch.Tensor | str | Path | None = None,
                           cache: bool = True, check: bool = True) -> InferenceModel:
    """The fastest inference module this library knows for `model` at this precision, device and batch size.

    precision: fp32, bf16, fp16 (CUDA) or int8 (CPU; calibrated on `calibration`: a tensor of preprocessed images,
    or a folder, default the family's training images). backend: "auto" (choose_backend) or one of eager, jit,
    inductor, onnxruntime (CPU fp32), pt2e (int8). `check` runs the result and the eager fp32 model on one random
    batch: fp32 paths must agree to 1e-4 relative (ValueError otherwise); the others record `max_rel_diff`.
    Outputs are fp32 logits whatever the precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    plan = choose_backend(device, precision) if backend == "auto" else Plan(backend, "asked for")
    if (plan.backend == "pt2e") != (precision == "int8"):
        raise ValueError(f"backend {plan.backend!r} with precision {precision!r}: int8 runs through pt2e only, "
                         "and pt2e makes int8 only")
    if plan.backend == "onnxruntime" and (precision != "fp32" or device.type != "cpu"):
        raise ValueError("backend onnxruntime runs fp32 on the CPU here; use --backend auto for other settings")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("bf16 on this CPU is emulated (no avx512_bf16 or AMX) and runs several times slower than fp32",
                      stacklevel=2)
    model = model.to(device).eval()
    size = image_size or preprocessing_of(model).crop  # what its weights were trained on (64 for a small run)
    example = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    start = time.perf_counter()
    if plan.backend in ("onnxruntime", "pt2e"):
        runner = (_onnx_runner(model, size, cache) if plan.backend == "onnxruntime"
                  else _int8_runner(model, calibration, batch_size, size, cache))
        source = fuse_for_inference(model, check=False)
    else:  # the folded copy compile_for_inference made (jit/inductor keep it as .source): one fold, not two
        runner = compile_for_inference(model, plan.backend, dtype=DTYPES[precision], example=example)
        source = runner if plan.backend == "eager" else runner.source
    optimized = InferenceModel(runner, source, precision, plan, 0.0, size)
    optimized(example)  # first call: compiles where the backend compiles; counted in build_seconds
    optimized.build_seconds = time.perf_counter() - start
    if check:
        with torch.no_grad():
            expected = model(example).float()
        optimized.max_rel_diff = float((optimized(example) - expected).abs().max() / expected.abs().max())
        if precision == "fp32" and optimized.max_rel_diff > 1e-4:
            raise ValueError(f"{plan.backend} output differs from the eager model by {optimized.max_rel_diff:.2e} "
                             "(relative; limit 1e-4); use --backend eager")
    return optimized


def agreement(optimized: nn.Module, model: nn.Module, batches: Sequence[torch.Tensor]) -> dict[str, float]:
    """Top-1 agreement (%) and max relative logit difference of `optimized` against eager fp32 `model`."""
    agree = total = 0
    worst = 0.0
    with torch.no_grad():
        for batch in batches:
            expected, got = model.eval()(batch).float(), optimized(batch).float()
            agree += int((expected.argmax(1) == got.argmax(1)).sum())
            total += len(batch)
            worst = max(worst, float((got - expected).abs().max() / expected.abs().max()))
    return {"top1_agreement": 100.0 * agree / total, "images": total, "max_rel_diff": worst}
