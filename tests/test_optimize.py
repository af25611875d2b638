"""resnets.optimize_for_inference: every fp32 path equals the eager model, the compile cache is verified before use,
and bad settings fail with one clear message. The int8, bf16 and inductor routes on trained weights and real images,
and the int8 calibration cache, are tested in test_inference_routes.py."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from resnets import create_model, optimize_for_inference
from resnets.data.paths import cache_dir
from resnets.deploy.optimize import choose_backend
from resnets.runtime import cpu_has_native_bf16

needs_onnxruntime = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                       reason="onnxruntime (the export extra) is not installed")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_model("resnet20").train()
    with torch.no_grad():  # non-trivial BN statistics, so that folding them is actually tested
        for _ in range(3):
            net(torch.randn(32, 3, 32, 32))
    return net.eval()


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("backend", ["eager", "jit", pytest.param("onnxruntime", marks=needs_onnxruntime)])
def test_fp32_paths_equal_the_eager_model_at_any_batch_size(model, backend, monkeypatch, tmp_path):
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path))
    fast = optimize_for_inference(model, "fp32", batch_size=8, backend=backend)
    assert fast.backend == backend and fast.precision == "fp32"
    for batch in (1, 8, 13):  # built for 8; the batch dimension stays dynamic
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(x)
        got = fast(x)
        assert got.dtype == torch.float32 and got.shape == expected.shape
        assert relative_error(got, expected) < 1e-4


@needs_onnxruntime
def test_auto_on_cpu_fp32_is_onnxruntime_and_its_cache_is_checked_before_use(model, monkeypatch, tmp_path):
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path))
    assert choose_backend(torch.device("cpu"), "fp32").backend == "onnxruntime"
    first = optimize_for_inference(model)
    cached = list((cache_dir() / "inference").glob("resnet20-*.onnx"))
    assert first.backend == "onnxruntime" and len(cached) == 1
    optimize_for_inference(model)  # reads the cached graph; writes nothing new
    assert list((cache_dir() / "inference").glob("resnet20-*.onnx")) == cached
    data = bytearray(cached[0].read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights: loadable, but wrong
    cached[0].write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="does not match its digest"):
        rebuilt = optimize_for_inference(model)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(rebuilt(x), model(x)) < 1e-4


def test_bad_settings_fail_with_one_clear_message(model):
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        optimize_for_inference(model, "int4")
    with pytest.raises(ValueError, match="int8 runs through pt2e only"):
        optimize_for_inference(model, "int8", backend="jit")
    with pytest.raises(ValueError, match="int8 inference runs on the CPU"):
        choose_backend(torch.device("cuda"), "int8")
    with pytest.raises(ValueError, match="fp16 inference is for CUDA"):
        choose_backend(torch.device("cpu"), "fp16")
    fast = optimize_for_inference(model, backend="eager")
    with pytest.raises(ValueError, match="only runs inference"):
        fast.train()


def test_bf16_on_a_cpu_without_native_bf16_is_built_as_asked_with_a_warning(model):
    if cpu_has_native_bf16():
        assert choose_backend(torch.device("cpu"), "bf16").backend == "inductor"
        return
    with pytest.warns(UserWarning, match="emulated"):
        fast = optimize_for_inference(model, "bf16", batch_size=4)
    assert fast.backend == "eager"
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (fast(x).argmax(1) == model(x).argmax(1)).float().mean() >= 0.75


def test_built_for_the_trained_crop_and_other_sizes_still_run(model, monkeypatch, tmp_path):
    """A model trained at 64 px crops is built for 64 px (its preprocessing record), not its family's 224; any other
    size runs the BN-folded copy instead of failing in a fixed-size graph."""
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path))
    small = create_model("resnet18", num_classes=10).eval()
    small.meta["preprocess"] = {"resize": 73, "crop": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    fast = optimize_for_inference(small, backend="onnxruntime" if importlib.util.find_spec("onnxruntime") else "jit")
    assert fast.image_size == 64
    for size in (64, 96):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            assert relative_error(fast(x), small(x)) < 1e-4


def test_static_batch_graphs_run_any_batch_in_chunks_of_their_size():
    """int8 graphs are lowered for one batch size (a dynamic batch ran 4.5x slower at batch 1); the wrapper feeds
    them exactly that size, zero-padding the last chunk and dropping the padding's rows."""
    from resnets.deploy.optimize import StaticBatch

    seen = []

    class FixedBatch(torch.nn.Module):
        def forward(self, x):
            seen.append(len(x))
            assert len(x) == 4, "a fixed-size graph got another batch size"
            return x * 2 + 1

    run = StaticBatch(FixedBatch(), 4)
    x = torch.randn(10, 3)
    assert torch.equal(run(x), x * 2 + 1) and seen == [4, 4, 4]
    assert torch.equal(run(x[:1]), x[:1] * 2 + 1) and torch.equal(run(x[:8]), x[:8] * 2 + 1)
