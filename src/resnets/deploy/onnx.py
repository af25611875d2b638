"""ONNX graphs of our models and ONNX Runtime sessions that run them: the one place both are made.

`resnets export` writes these graphs to files; `optimize_for_inference` runs them through onnxruntime where that
is the fastest fp32 CPU path (benchmarks/inference.py). Graph: float32 NCHW input `input`, logits `logits`,
dynamic batch, BN already folded by the caller, constants folded by the exporter.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from ..version import __version__

DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def onnx_bytes(model: torch.nn.Module, example: torch.Tensor, opset: int = DEFAULT_OPSET,
               metadata: dict[str, str] | None = None) -> bytes:
    """Serialized, checked ONNX model of `model` traced on `example` (its batch dimension made dynamic)."""
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated in favour of dynamo
        # dynamo=False: the dynamo exporter needs onnxscript; the classic one covers every op of a ResNet.
        dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        torch.onnx.export(model, (example.contiguous(),), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=dynamic, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "resnets", __version__
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def ort_session(model: str | Path | bytes, threads: int | None = None):  # -> onnxruntime.InferenceSession
    """A CPU session with every graph optimisation on and `threads` intra-op threads (default: torch's count, so
    that onnxruntime and PyTorch are compared on the same cores).

    Spinning is off: onnxruntime's idle workers otherwise busy-wait after each run and take the cores from whatever
    PyTorch runs next in the process (measured on 2 cores, ResNet-50 bf16 at batch 1 right after an onnxruntime
    call: 14.1 images/s with spinning, 30.3 without), while onnxruntime itself measured the same either way
    (22.8 vs 22.5 images/s at batch 1, 24.4 vs 25.2 at batch 16)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxRuntimeModule(torch.nn.Module):
    """An onnxruntime session behind a module's call: float tensor in (any memory format), fp32 logits out."""

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])
