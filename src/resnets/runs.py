"""The run directory, in one place: its file names, the metrics log, and loading a finished run or its weights.

    RUN/config.json          options, recipe, architecture, data and hardware, written at the start
    RUN/metrics.jsonl        one JSON object per logged iteration (train loss/error, lr, images/s, test error)
    RUN/checkpoints/last.pt  everything needed to resume bit-exactly (previous.pt: the one before it, kept as a
                             fallback; best.pt: the best evaluation so far)
    RUN/model.pt             final weights + architecture + classes + preprocessing + measured test error
    RUN/summary.json         final numbers; "complete" says whether the whole schedule ran
    RUN/curves.png           train error dashed, test error solid (Fig. 6 style)
    RUN/tensorboard/         with --tensorboard: metrics.jsonl's lines as TensorBoard scalars (one event file)

No other module spells these names.
"""

from __future__ import annotations

import importlib.util
import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import UnreadableFileError, atomic_write_bytes, atomic_write_text, read_json
from .models import ResNetSpec, model_spec

CONFIG, METRICS, SUMMARY, WEIGHTS, CURVES = "config.json", "metrics.jsonl", "summary.json", "model.pt", "curves.png"
CHECKPOINTS, TENSORBOARD = "checkpoints", "tensorboard"
RECORD_FILES = (SUMMARY, CONFIG, METRICS)  # what a finished run must hold to be reported (and is committed)


class RunDirectoryError(ValueError):
    """A run directory that cannot be used: missing files or files that disagree."""


@dataclass(frozen=True)
class RunPaths:
    """The files of one run directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def weights(self) -> Path:
        return self.root / WEIGHTS

    @property
    def curves(self) -> Path:
        return self.root / CURVES

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    def checkpoint(self, tag: str = "last") -> Path:
        return self.root / CHECKPOINTS / f"{tag}.pt"

    @property
    def resumable(self) -> list[Path]:
        """Checkpoints to resume from, newest first: last.pt, then the previous.pt kept when it was replaced."""
        return [self.checkpoint("last"), self.checkpoint("previous")]

    def has_checkpoint(self) -> bool:
        return any(path.is_file() for path in self.resumable)

    def is_complete(self) -> bool:
        """A summary.json that says the whole schedule ran."""
        return self.summary.is_file() and bool(read_json(self.summary, "run summary").get("complete"))

    @classmethod
    def of_weights(cls, path: Path) -> RunPaths | None:
        """The run directory that holds a model.pt or checkpoints/*.pt file, if that is where it lies."""
        path = Path(path)
        root = path.parent.parent if path.parent.name == CHECKPOINTS else path.parent
        return cls(root) if (root / CONFIG).is_file() else None


def decide_resume(resume: bool | str, run_dir: str | Path) -> bool:
    """Whether a run in `run_dir` continues from its checkpoint: `resume` True (it must have one), False (it must
    not: a new run never overwrites an old one), or "auto" (continue if it has one, else start). Every trainer and
    experiment decides it here, with these errors."""
    if resume not in (True, False, "auto"):
        raise ValueError(f"--resume takes no value or 'auto', got {resume!r}")
    paths = RunPaths(Path(run_dir))
    started = paths.has_checkpoint()
    if resume == "auto":
        return started
    if started and not resume:
        raise ValueError(f"{paths.root} already holds a run; pass --resume (or --resume auto) to continue it or "
                         "choose another --out")
    if resume and not started:
        raise FileNotFoundError(f"--resume: no checkpoint in {paths.root / CHECKPOINTS}; start without --resume, or "
                                "use --resume auto")
    return bool(resume)


class MetricsLog:
    """metrics.jsonl: one JSON object per line; on resume, lines past the checkpoint are dropped. With `tensorboard`,
    every line is also written as TensorBoard scalars in RUN/tensorboard/ (`TensorBoardLog`): the one place either
    is written, so the two always hold the same records."""

    def __init__(self, path: Path, resume_from_iteration: int | None, tensorboard: bool = False) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        if resume_from_iteration is not None and self.path.exists():
            self.records = [r for r in read_metrics(self.path) if r["iteration"] <= resume_from_iteration]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        elif self.path.exists():
            self.path.unlink()
        self.events = TensorBoardLog(self.path.parent / TENSORBOARD, self.records) if tensorboard else None

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.events is not None:
            self.events.write(record)


def require_tensorboard() -> None:
    """One line saying what to install when the `tensorboard` package (which writes the event files) is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError("--tensorboard needs the tensorboard package: pip install 'resnets[tensorboard]' (or pip "
                         "install tensorboard), or leave out --tensorboard")


class TensorBoardLog:
    """metrics.jsonl's records as TensorBoard scalars, tagged with their metrics.jsonl keys, at step = iteration.

    Resume-safe by construction: the folder's event files are rewritten from the records metrics.jsonl keeps (those up
    to the checkpoint) whenever a run starts or resumes, so a step logged after the last checkpoint by the process that
    was stopped appears once, not twice, in every tool (not only in those that honour TensorBoard's purge events)."""

    def __init__(self, folder: Path, records: Sequence[dict[str, Any]] = ()) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter  # imported here: the package is optional

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("events.out.tfevents.*"):
            old.unlink()
        self.writer = SummaryWriter(log_dir=str(self.folder))
        weakref.finalize(self, self.writer.close)  # closed with the run that owns it
        for record in records:
            self.write(record, flush=False)
        self.writer.flush()

    def write(self, record: dict[str, Any], flush: bool = True) -> None:
        step = int(record["iteration"])
        for key, value in record.items():
            if key != "iteration" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=step)
        if flush:  # a line at a time, as metrics.jsonl: what a stopped run logged is on disk
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise RunDirectoryError(f"{path}: a line is not JSON ({error}); retrain or leave it out") from None


def run_dataset(weights: Path) -> str | None:
    """The dataset the run holding `weights` trained on, from its config.json (for files without metadata)."""
    run = RunPaths.of_weights(weights)
    return read_json(run.config, "run config")["options"]["dataset"] if run else None


@dataclass
class RunRecord:
    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    label: str = ""  # how a report names it: its path below the folder that holds all reported runs

    @property
    def name(self) -> str:
        return self.label or self.path.name

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.path)


def load_run(path: str | Path) -> RunRecord:
    """A finished run directory, checked for completeness and self-consistency; one error naming what is wrong."""
    run = RunPaths(Path(path))
    if not run.root.is_dir():
        raise RunDirectoryError(f"{run.root} is not a directory; give run directories written by `resnets train`")
    missing = [name for name in RECORD_FILES if not (run.root / name).is_file()]
    if missing:
        raise RunDirectoryError(f"{run.root}: {', '.join(missing)} missing; a finished run directory holds "
                                f"{', '.join(RECORD_FILES)} (finish it with `resnets train --resume --out {run.root}` "
                                "or leave it out)")
    try:
        summary, config = read_json(run.summary), read_json(run.config)
    except UnreadableFileError as error:
        raise RunDirectoryError(f"{error}; the run directory is damaged: retrain or resume it, or leave it "
                                "out") from None
    metrics = read_metrics(run.metrics)
    try:
        problems = inconsistencies(summary, config, metrics)
    except (KeyError, TypeError, ValueError) as error:
        raise RunDirectoryError(f"{run.root}: {SUMMARY} or {CONFIG} lacks {error} or has it malformed; it was not "
                                "written by this resnets: retrain it or leave it out") from None
    if problems:
        raise RunDirectoryError(f"{run.root} is inconsistent: {'; '.join(problems)}; the files were edited or come "
                                "from different runs: retrain it or leave it out")
    return RunRecord(run.root, summary, config, metrics)


def require_test_error(run: RunRecord, instead: str) -> None:
    """Refuse a tuning run (`--val-split`) where a test error is read: it ended on held-out training images and never
    saw the test set. `instead`: what to give in its place."""
    if "val_top1_error" in run.summary:
        raise RunDirectoryError(f"{run.path} is a tuning run ({run.summary['val_images']:,} training images held out, "
                                f"the test set never seen); {instead}")


def inconsistencies(summary: dict[str, Any], config: dict[str, Any], metrics: Sequence[dict[str, Any]]) -> list[str]:
    options = config["options"]
    problems = []
    architecture = ResNetSpec.from_config(config["model_config"]).name
    if summary["model"] != options["model"]:
        problems.append(f"{SUMMARY} says model {summary['model']!r}, {CONFIG} {options['model']!r}")
    elif model_spec(summary["model"]).name != architecture:
        problems.append(f"{SUMMARY} says model {summary['model']!r}, {CONFIG}'s architecture is {architecture!r}")
    if summary["dataset"] != options["dataset"]:
        problems.append(f"{SUMMARY} says dataset {summary['dataset']!r}, {CONFIG} {options['dataset']!r}")
    last = metrics[-1]["iteration"] if metrics else None
    if summary["iterations"] != last:
        problems.append(f"{SUMMARY} says {summary['iterations']} iterations, {METRICS} ends at {last}")
    if summary["scheduled_iterations"] != config["iterations"]:
        problems.append(f"{SUMMARY} schedules {summary['scheduled_iterations']} iterations, {CONFIG} "
                        f"{config['iterations']}")
    return problems


def copy_records(run_dir: Path, records: Path, extra: Sequence[str] = ()) -> Path:
    """A complete run's small records (config, metrics, summary, curves and `extra` files) into records/<run name>,
    the copy that is committed and reported; weights and checkpoints stay behind."""
    target = records / run_dir.name
    for source in (*(run_dir / name for name in (*RECORD_FILES, *extra)), RunPaths(run_dir).curves):
        content = source.read_bytes()
        atomic_write_bytes(target / source.name, lambda f, content=content: f.write(content))
    return target
