"""`resnets analyze responses|ship`, `resnets report` and `resnets experiment degradation`: the paper's CIFAR-10
evidence (Fig. 6, Fig. 7, Table 6) regenerated from run directories, and trained weights shipped in the package."""

from __future__ import annotations

import argparse
import dataclasses
import shlex


def register(subparsers: argparse._SubParsersAction) -> None:
    analyze = subparsers.add_parser("analyze", help="layer responses (Fig. 7); ship a run's weights in the package")
    analyses = analyze.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    r = analyses.add_parser("responses", help="std of each 3x3 layer's response after BN, over the test set (Fig. 7)")
    r.add_argument("--pretrained", action="append", default=[], metavar="MODEL.TAG|FILE|RUN",
                   help="shipped weights (e.g. resnet20.fast), a weight file or a run directory; repeat for each model")
    r.add_argument("--checkpoint", action="append", default=[], help=argparse.SUPPRESS)  # old --pretrained
    r.add_argument("--data", default=None, help="CIFAR directory (default: the datasets root)")
    r.add_argument("--out", default="runs/responses", help="folder for responses.csv and the two figures")
    r.add_argument("--subset", type=int, default=None, help="N test images spread over the set (default: all)")
    r.add_argument("--device", default="auto")
    r.set_defaults(handler=run_responses)

    s = analyses.add_parser("ship", help="copy a finished run's weights into the package as MODEL.TAG")
    s.add_argument("run_dir", help="a complete CIFAR or Imagenette run directory; or shipped Imagenette weights "
                                   "MODEL.TAG with --recalibrate-bn")
    s.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                   help="ship MODEL.TAG again under --tag with its BN statistics re-estimated on N training photos "
                        "fed whole at every --bn-sides side, pooled (weights untouched)")
    s.add_argument("--bn-sides", type=int, nargs="+", default=[128, 160, 192], metavar="S",
                   help="the input sides the recalibrated statistics are pooled over (default: 128 160 192)")
    s.add_argument("--name", default=None, help="model name it loads under (default: the run's model, e.g. resnet20)")
    s.add_argument("--tag", default=None, help="the tag it loads under, as MODEL.TAG (default: the recipe's name, "
                   "e.g. resnet20.paper, resnet20.fast)")
    s.add_argument("--data", default=None, help="CIFAR directory for the 1,000-image check (default: datasets root)")
    s.add_argument("--weights-dir", default=None, help="target folder (default: the package's assets/weights)")
    s.add_argument("--device", default="auto")
    s.set_defaults(handler=run_ship)

    rep = subparsers.add_parser("report", help="write REPRODUCTION.md from run directories (Tables 1 and 6, "
                                               "Fig. 6, Fig. 7)")
    rep.add_argument("run_dirs", nargs="*", help="run directories for Table 6")
    rep.add_argument("--depth", default=None, help="folder of <model>-s<seed> runs: the depth series (Table 6, "
                                                   "Fig. 6, mean ± std over seeds), e.g. results/depth")
    rep.add_argument("--imagenette", default=None, help="folder of <model>-s<seed> Imagenette runs with their "
                     "protocols.json (Tables 2 and 3, Fig. 4), e.g. results/imagenette")
    rep.add_argument("--preact", default=None, help="folder of <model>-s<seed> runs: original vs pre-activation "
                     "(Identity Mappings), e.g. results/preact")
    rep.add_argument("--detection", default=None, help="folder of <backbone>-s<seed> detection runs (Sec. 4.3 in "
                     "miniature), e.g. results/detection")
    rep.add_argument("--pennfudan", default=None, help="folder of <backbone>-s<seed> Mask R-CNN runs on Penn-Fudan "
                     "(Sec. 4.3 on real photos: box and mask AP), e.g. results/pennfudan")
    rep.add_argument("--degradation", default=None, help="folder of `resnets experiment degradation`")
    rep.add_argument("--responses", default=None, help="folder of `resnets analyze responses`")
    rep.add_argument("--out", default="REPRODUCTION.md")
    rep.set_defaults(handler=run_report)

    experiment = subparsers.add_parser("experiment", help="the paper's experiments (degradation: Fig. 6)")
    experiments = experiment.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    d = experiments.add_parser("degradation", help="plain-20/56 vs ResNet-20/56 under one budget (Fig. 6)")
    d.add_argument("--budget", type=float, default=None,
                   help="epochs per network, lr /10 at 50%% and 75%% (default: the paper's 64k iterations)")
    d.add_argument("--models", nargs="+", default=None, help="networks (default: plain20 plain56 resnet20 resnet56)")
    d.add_argument("--out", default="runs/degradation")
    d.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    d.add_argument("--data", default=None, help="CIFAR directory (default: the datasets root)")
    d.add_argument("--subset", type=int, default=None, help="train on N training images (smoke runs)")
    d.add_argument("--eval-subset", type=int, default=None, help="evaluate on the first N test images")
    d.add_argument("--device", default="auto")
    d.add_argument("--compile", action="store_true", help="torch.compile each network (faster after a warm-up)")
    d.add_argument("--no-progress", dest="progress", action="store_false")
    d.set_defaults(handler=run_degradation)
    series = experiments.add_parser("depth", help="the CIFAR-10 depth series (Table 6, Fig. 6) over seeds, resumable")
    add_series_arguments(series, "resnet20 resnet32 resnet44 resnet56 resnet110 plain20 plain32 plain44 plain56",
                         "results/depth", "CIFAR")
    series.add_argument("--recipe", default="fast", help="one recipe for every network (default fast)")
    series.set_defaults(handler=run_depth)
    preact = experiments.add_parser("preact", help="original vs pre-activation ResNet at the same depth on CIFAR-10 "
                                                   "(Identity Mappings, ECCV 2016), resumable")
    add_series_arguments(preact, "resnet164 preact_resnet164", "results/preact", "CIFAR", default_models=True)
    preact.add_argument("--recipe", default="fast", help="one recipe for every network (default fast)")
    preact.set_defaults(handler=run_preact)
    nette = experiments.add_parser("imagenette", help="plain-18/34 vs ResNet-18/34 on Imagenette (Table 2, Table 3, "
                                                      "Fig. 4 in miniature), each tested with the three protocols")
    add_series_arguments(nette, "plain18 plain34 resnet18 resnet34", "results/imagenette", "Imagenette (train/, val/)")
    nette.add_argument("--subset", type=int, default=None, help="train on N training images (smoke runs)")
    nette.add_argument("--eval-subset", type=int, default=None, help="evaluate on N validation images while training")
    nette.add_argument("--recipe", default="imagenette", choices=["imagenette", "imagenette-fast"],
                       help="one recipe for every network: the paper-faithful imagenette (default) or imagenette-fast")
    nette.add_argument("--shortcut", default="A", choices=["A", "B", "C"],
                       help="the residual nets' shortcuts: A (Table 2, default), or B/C for Table 3's rows, with their "
                            "own --out and --records RECORDS/option-B beside the option A series")
    nette.set_defaults(handler=run_imagenette)
    det = experiments.add_parser("detection", help="the same detector on plain and residual backbones (Sec. 4.3 in "
                                                   "miniature): Mask R-CNN on Penn-Fudan by default, resumable")
    det.add_argument("--backbones", nargs="+", default=["plain18", "resnet18"])
    det.add_argument("--seeds", nargs="+", type=int, default=[0])
    det.add_argument("--pretrained", default="imagenette", metavar="TAG|RUNS|none",
                     help="each backbone's shipped TAG (default imagenette: resnet18.imagenette, ...), a folder of "
                          "<backbone>-s0 classification runs, or 'none' for He initialisation")
    det.add_argument("--data", default=None, help="the Penn-Fudan database (default: the datasets root's pennfudan/) "
                                                  "or a synthetic dataset folder (made there if missing)")
    det.add_argument("--out", required=True, help="run directories, <backbone>-s<seed> (outside the work tree)")
    det.add_argument("--records", default=None, help="copy each complete run's records here (e.g. results/detection)")
    det.add_argument("--iterations", type=int, default=None)
    det.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    det.add_argument("--device", default="auto")
    det.add_argument("--no-progress", dest="progress", action="store_false")
    det.set_defaults(handler=run_detection)


def add_series_arguments(parser: argparse.ArgumentParser, models: str, records: str, data: str,
                         default_models: bool = False) -> None:
    """Options shared by the series experiments: networks x seeds, resumable run directories, committed records.
    `models`: the example, or the default when `default_models`."""
    if default_models:
        parser.add_argument("--models", nargs="+", default=models.split(), help=f"default: {models}")
    else:
        parser.add_argument("--models", nargs="+", required=True, help=f"e.g. {models}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=float, default=None, help="the recipe's schedule stretched to N epochs")
    parser.add_argument("--out", required=True, help="run directories, <model>-s<seed> (outside the work tree)")
    parser.add_argument("--records", default=None, help=f"copy each complete run's records here (e.g. {records})")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile each network (faster after a warm-up)")
    parser.add_argument("--data", default=None, help=f"{data} directory (default: the datasets root)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--jobs", type=int, default=1,
                        help="CPU: train N networks at once, each pinned to its share of the cores (default 1)")


def run_responses(args: argparse.Namespace) -> int:
    from ..analysis.responses import analyze_responses
    from .predict import warn_deprecated

    for old in args.checkpoint:
        warn_deprecated("analyze", f"--checkpoint {old}", f"--pretrained {old}")
    sources = args.pretrained + args.checkpoint
    if not sources:
        raise ValueError("give at least one --pretrained MODEL.TAG|FILE|RUN")
    words = ["resnets", "analyze", "responses"]
    for source in sources:
        words += ["--pretrained", source]
    for flag, value in (("--data", args.data), ("--subset", args.subset)):
        if value is not None:
            words += [flag, str(value)]
    written = analyze_responses(sources, args.out, args.data, args.subset, args.device,
                                command=shlex.join([*words, "--out", args.out]))
    print("\n".join(f"wrote {path}" for path in written.values()))
    return 0


def run_ship(args: argparse.Namespace) -> int:
    import json

    from ..analysis.ship import ship_recalibrated, ship_weights

    if args.recalibrate_bn:
        if args.tag is None or args.name is not None:
            raise ValueError("--recalibrate-bn ships MODEL.TAG again under a new name: give --tag (e.g. --tag "
                             "imagenette-fast-recal) and no --name")
        path = ship_recalibrated(args.run_dir, args.recalibrate_bn, args.bn_sides, args.tag,
                                 weights_dir=args.weights_dir, data=args.data, device=args.device)
    else:
        path = ship_weights(args.run_dir, args.name, args.weights_dir, args.data, args.device, args.tag)
    shipped = json.loads(path.with_suffix(".json").read_text())
    name = f"{shipped['model']}.{shipped['pretrained']}"
    print(f"shipped {path} (+ {path.with_suffix('.json').name}), create_model({name!r}): test error "
          f"{shipped['test_top1_error']:.2f}% on "
          f"{shipped['test_images']:,} images, {shipped['check_subset']['top1_error']:.2f}% on the "
          f"{shipped['check_subset']['images']:,}-image check subset"
          + (f", {shipped['check_all']['top1_error']:.2f}% on every test image in fp32" if "check_all" in shipped
             else ""))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..analysis.report import write_report

    path = write_report(args.run_dirs, args.out, args.degradation, args.responses, depth=args.depth,
                        imagenette=args.imagenette, detection=args.detection, preact=args.preact,
                        pennfudan=args.pennfudan)
    print(f"wrote {path}")
    return 0


def run_depth(args: argparse.Namespace) -> int:
    from ..analysis.depth import run_depth_series

    run_depth_series(args.out, args.models, args.seeds, args.recipe, args.precision, args.compile, args.data,
                     args.device, args.records, args.epochs, args.progress, jobs=args.jobs)
    return 0


def run_preact(args: argparse.Namespace) -> int:
    from ..analysis.preact import run_preact_comparison

    run_preact_comparison(args.out, args.models, args.seeds, args.recipe, args.precision,
                          args.compile, args.data, args.device, args.records, args.epochs, args.progress,
                          jobs=args.jobs)
    return 0


def run_detection(args: argparse.Namespace) -> int:
    from ..analysis.detection import detection_rows, detection_verdict, load_detection_runs
    from ..data.paths import datasets_root
    from ..detection.experiment import run_detection_series
    from ..detection.train import default_recipe

    data = args.data or str(datasets_root() / "pennfudan")
    recipe = default_recipe(data)
    recipe = recipe if args.iterations is None else dataclasses.replace(recipe, iterations=args.iterations)
    run_detection_series(args.out, data, args.backbones, args.seeds,
                         None if args.pretrained == "none" else args.pretrained, args.records, args.precision,
                         args.device, recipe,
                         progress=args.progress)
    for line in detection_verdict(detection_rows(load_detection_runs(args.out))):
        print(line)
    return 0


def run_imagenette(args: argparse.Namespace) -> int:
    from ..analysis.imagenette import run_imagenette_series

    run_imagenette_series(args.out, args.models, args.seeds, args.precision, args.compile, args.data, args.device,
                          args.records, args.epochs, args.progress, jobs=args.jobs, subset=args.subset,
                          eval_subset=args.eval_subset, recipe=args.recipe, shortcut=args.shortcut)
    return 0


def run_degradation(args: argparse.Namespace) -> int:
    from ..analysis.experiments import DEGRADATION_MODELS
    from ..analysis.experiments import run_degradation as run

    run(args.out, args.models or DEGRADATION_MODELS, args.budget, args.precision, args.data, args.subset,
        args.eval_subset, args.device, progress=args.progress, compile=args.compile)
    return 0
