"""CPU inference: our paths against onnxruntime (the anchor), OpenVINO and torchvision, in one process.

ResNet-50 v1.5 (torchvision's layout, so that every candidate computes the same function; random weights, seed 0),
224x224, batch 1 and 16. The candidates of one table run in interleaved rounds (A, B, C, A, B, C, ...); a ratio is
the median of per-round ratios against onnxruntime fp32 running our exported graph, so load from other processes
hits all alike. Agreement: each candidate against the eager fp32 model on the 200 imagenet-sample photos (top-1
agreement; max |logit difference| relative to the largest logit). int8 paths calibrate on Imagenette training
photos. `--cifar`: the shipped ResNet-20 weights on the full CIFAR-10 test set, fp32 against int8.
`--first-call`: seconds from a fresh process to the first batch's logits, cold caches and warm.

    .venv/bin/python benchmarks/inference.py --rounds 9 --cifar --first-call --json benchmarks/results/inference.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

from resnets.data.folder import IMAGE_FORMATS, read_image
from resnets.data.paths import datasets_root
from resnets.data.preprocess import preprocessing_of
from resnets.deploy.bench import BenchConfig, build_step, time_interleaved
from resnets.deploy.fuse import compile_for_inference
from resnets.deploy.onnx import OnnxRuntimeModule, onnx_bytes, ort_session
from resnets.deploy.optimize import agreement, calibration_images, optimize_for_inference
from resnets.io import atomic_write_json
from resnets.models import create_model
from resnets.runtime import cpu_has_native_bf16, cpu_has_vnni

Runner = Callable[[torch.Tensor], torch.Tensor]
ANCHOR = "onnxruntime fp32 (our export)"
PAUSE = 0.25  # idle seconds before each timed call: the previous runtime's spinning threads go quiet


def ort_int8(fp32_graph: bytes, calibration: torch.Tensor) -> OnnxRuntimeModule:
    """onnxruntime's own static int8 (QDQ, per-channel weights) on our graph: what an ONNX user would deploy."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": chunk.numpy()} for chunk in calibration.split(16)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(fp32_graph)
        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=not cpu_has_vnni())
        return OnnxRuntimeModule(ort_session(target.read_bytes()))


def openvino_fp32(model: torch.nn.Module, example: torch.Tensor) -> Runner | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    core.set_property("CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads()})
    compiled = core.compile_model(ov.convert_model(model, example_input=example), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda x: torch.from_numpy(request.infer({0: x.contiguous().numpy()})[0].copy())


def build_candidates(model: torch.nn.Module, precisions: list[str], batch: int,
                     calibration: torch.Tensor) -> dict[str, tuple[Runner, float]]:
    """name -> (callable, seconds to build it). Our fp32 export is folded; torchvision's is exported as is."""
    example = torch.zeros(batch, 3, 224, 224)
    tv = torchvision.models.resnet50()
    tv.load_state_dict(model.state_dict())  # same names, same function (v1.5)
    tv.eval()
    builders: dict[str, Callable[[], Runner | None]] = {
        ANCHOR: lambda: optimize_for_inference(model, "fp32", batch, backend="onnxruntime", cache=False),
        "onnxruntime fp32 (torchvision export)": lambda: OnnxRuntimeModule(ort_session(onnx_bytes(tv, example))),
        "openvino fp32": lambda: openvino_fp32(tv, example),
        "torchvision eager fp32": lambda: tv,
        "ours eager fp32 (BN folded, channels_last)": lambda: compile_for_inference(model, "eager"),
        "ours jit fp32": lambda: compile_for_inference(model, "jit", example=example),
        "ours inductor fp32": lambda: compile_for_inference(model, "inductor"),
        "ours optimize_for_inference fp32 (auto)": lambda: optimize_for_inference(model, "fp32", batch),
    }
    if "bf16" in precisions:
        builders["ours eager bf16"] = lambda: optimize_for_inference(model, "bf16", batch, backend="eager")
        builders["ours inductor bf16"] = lambda: optimize_for_inference(model, "bf16", batch, backend="inductor")
    if "int8" in precisions:
        builders["onnxruntime int8 (QDQ static)"] = lambda: ort_int8(onnx_bytes(tv, example[:1]), calibration)
        builders["ours int8 (pt2e, auto)"] = lambda: optimize_for_inference(model, "int8", batch,
                                                                              calibration=calibration)
    built = {}
    for name, build in builders.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runner = build()
        if runner is not None:
            with torch.no_grad():
                runner(example)  # first call compiles where the path compiles
            built[name] = (runner, time.perf_counter() - start)
    return built


def photos(model: torch.nn.Module, count: int = 200) -> torch.Tensor:
    folder = datasets_root() / "imagenet-sample"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_FORMATS)[:count]
    preprocess = preprocessing_of(model)
    return torch.stack([preprocess(read_image(p)) for p in files])


def run_table(batch: int, candidates: dict[str, tuple[Runner, float]], rounds: int) -> list[dict]:
    example = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))

    def step(runner: Runner) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            with torch.no_grad():
                return runner(example)
        return call

    steps = {name: (step(runner), torch.device("cpu")) for name, (runner, _) in candidates.items()}
    times = time_interleaved(steps, warmup=1, repeats=rounds, pause=PAUSE)
    anchor = times[ANCHOR]
    rows = []
    print(f"\n## ResNet-50 v1.5, 224x224, batch {batch}, {torch.get_num_threads()} threads, {rounds} rounds")
    print(f"{'candidate':<44} {'images/s':>9} {'vs onnxruntime fp32':>20} {'build+1st call s':>17}")
    for name, seconds in times.items():
        ratio = statistics.median(a / s for a, s in zip(anchor, seconds, strict=True))
        rows.append({"batch": batch, "candidate": name, "images_per_s": batch / statistics.median(seconds),
                     "ratio_vs_onnxruntime_fp32": ratio, "build_seconds": candidates[name][1],
                     "runs": [batch / s for s in seconds]})
        print(f"{name:<44} {rows[-1]['images_per_s']:>9.1f} {ratio:>19.2f}x {candidates[name][1]:>17.1f}", flush=True)
    return rows


def cifar_paths(rounds: int, precisions: list[str]) -> dict:
    """Shipped ResNet-20 (`fast` weights) on the full CIFAR-10 test set: fp32 eager, onnxruntime, bf16, int8."""
    from resnets.evaluate.run import cifar_test_batches

    model = create_model("resnet20", pretrained="fast").eval()
    loader, source = cifar_test_batches(model, None, device=torch.device("cpu"))
    batches = list(loader)
    inputs = [x for x, _ in batches]
    labels = torch.cat([y for _, y in batches])
    result = {"source": source, "images": len(labels)}
    paths = {"eager fp32": model, "onnxruntime fp32": optimize_for_inference(model, "fp32", 128, cache=False)}
    if "bf16" in precisions:
        paths["bf16 (auto)"] = optimize_for_inference(model, "bf16", 128)
    if "int8" in precisions:
        paths["int8 (pt2e)"] = optimize_for_inference(model, "int8", 128)
    print(f"\n## CIFAR-10 test set ({len(labels)} images), shipped resnet20 `fast` weights")
    for name, runner in paths.items():
        with torch.no_grad():
            predicted = torch.cat([runner(x).argmax(1) for x in inputs])
        error = 100.0 * float((predicted != labels).float().mean())
        row = {"top1_error": error, **agreement(runner, model, inputs)}
        result[name] = row
        print(f"{name:<20} top-1 error {error:6.2f}%  top-1 agreement with eager fp32 {row['top1_agreement']:6.2f}%  "
              f"max rel diff {row['max_rel_diff']:.2e}", flush=True)
    steps = {name: ((lambda r=runner, x=inputs[0]: r(x)), torch.device("cpu")) for name, runner in paths.items()}
    with torch.no_grad():
        times = time_interleaved(steps, warmup=1, repeats=rounds, pause=PAUSE)
    for name, seconds in times.items():
        result[name]["images_per_s"] = len(inputs[0]) / statistics.median(seconds)
        print(f"{name:<20} {result[name]['images_per_s']:8.0f} images/s at batch {len(inputs[0])}")
    for name in ("bf16 (auto)", "int8 (pt2e)"):
        if name in result:
            result[f"{name.split()[0]}_cost_points"] = result[name]["top1_error"] - result["eager fp32"]["top1_error"]
    return result


def training_step(rounds: int, batch: int) -> list[dict]:
    """ResNet-50 forward + backward + SGD step, fp32: ours (v1.5) against torchvision's, interleaved."""
    common = {"model": "resnet50", "mode": "train", "batch_size": batch}
    configs = {"torchvision": BenchConfig(impl="torchvision", **common), "ours": BenchConfig(v15=True, **common)}
    times = time_interleaved({name: build_step(config) for name, config in configs.items()}, 1, rounds)
    print(f"\n## ResNet-50 training step fp32 224, batch {batch}")
    rows = []
    for name, seconds in times.items():
        ratio = statistics.median(b / s for b, s in zip(times["torchvision"], seconds, strict=True))
        rows.append({"candidate": name, "images_per_s": batch / statistics.median(seconds),
                     "ratio_vs_torchvision": ratio})
        print(f"{name:<12} {rows[-1]['images_per_s']:7.1f} images/s  {ratio:.2f}x torchvision", flush=True)
    return rows


FIRST_CALL = """
import sys, time
start = time.perf_counter()
import torch, resnets
torch.manual_seed(0)  # the same weights in every process: the caches are keyed by them
model = resnets.create_model("resnet50", stride_in_1x1=False)
fast = resnets.optimize_for_inference(model, sys.argv[1], 16, backend=sys.argv[2], check=False)
fast(torch.zeros(16, 3, 224, 224))
print(time.perf_counter() - start)
"""


def first_call(cases: list[tuple[str, str]]) -> list[dict]:
    """Fresh-process seconds to the first logits, with empty caches and then with the caches the first run left."""
    rows = []
    print("\n## first call from a fresh process (ResNet-50, batch 16): import + build + compile + one batch")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "RESNETS_CACHE": f"{cache}/resnets", "TORCHINDUCTOR_CACHE_DIR": f"{cache}/inductor"}
        for precision, backend in cases:
            row = {"precision": precision, "backend": backend}
            for state in ("cold", "warm"):
                done = subprocess.run([sys.executable, "-c", FIRST_CALL, precision, backend], env=env,
                                      capture_output=True, text=True, check=True)
                row[f"{state}_seconds"] = float(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{precision} {backend:<12} cold {row['cold_seconds']:6.1f} s   warm {row['warm_seconds']:6.1f} s",
                  flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="16,1")
    parser.add_argument("--rounds", type=int, default=9, help="timed interleaved rounds (medians reported)")
    parser.add_argument("--precisions", default="fp32,int8", help="of fp32, bf16, int8")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--cifar", action="store_true", help="also: bf16/int8 accuracy of the shipped ResNet-20")
    parser.add_argument("--first-call", action="store_true", help="also: fresh-process first-call seconds")
    parser.add_argument("--train", action="store_true", help="also: ResNet-50 training step vs torchvision")
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    precisions = args.precisions.split(",")
    start = time.perf_counter()
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 "
          f"{cpu_has_native_bf16()}, VNNI {cpu_has_vnni()}, {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    model = create_model("resnet50", stride_in_1x1=False).eval()
    calibration = calibration_images(model, None, args.calibration_images)
    report: dict = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "threads": torch.get_num_threads(), "rounds": args.rounds, "tables": [], "agreement": {}}
    candidates = None
    for batch in (int(b) for b in args.batches.split(",") if b):
        candidates = build_candidates(model, precisions, batch, calibration)
        report["tables"] += run_table(batch, candidates, args.rounds)
    images = photos(model) if candidates else torch.empty(0)
    print(f"\n## agreement with eager fp32 on {len(images)} imagenet-sample photos (random weights)")
    for name, (runner, _) in (candidates or {}).items():
        row = agreement(runner, model, list(images.split(16)))
        report["agreement"][name] = row
        print(f"{name:<44} top-1 agreement {row['top1_agreement']:6.1f}%  max rel diff {row['max_rel_diff']:.2e}")
    if args.cifar:
        report["cifar"] = cifar_paths(args.rounds, precisions)
    if args.first_call:
        cases = [("fp32", "onnxruntime"), ("fp32", "inductor"), ("int8", "pt2e")]
        cases += [("bf16", "inductor")] if "bf16" in precisions else []
        report["first_call"] = first_call(cases)
    if args.train:
        report["training_step"] = training_step(args.rounds, 16)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
