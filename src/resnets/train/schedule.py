"""Learning-rate schedules by iteration. The lr is a pure function of the iteration plus two small
pieces of state (plateau drops and the ResNet-110 error warm-up), both saved in checkpoints."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .recipes import Recipe

SCHEDULES = ("step", "cosine", "onecycle", "plateau")


def milestone_iterations(recipe: Recipe, total: int) -> list[int]:
    """Milestones are iterations, or fractions of the run when all are < 1 (e.g. step-90's 1/3, 2/3)."""
    if recipe.milestones and all(m < 1 for m in recipe.milestones):
        return [round(m * total) for m in recipe.milestones]
    return [int(m) for m in recipe.milestones]


class LrSchedule:
    def __init__(self, recipe: Recipe, total_iterations: int) -> None:
        if recipe.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {recipe.schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
        self.recipe = recipe
        self.total = max(1, total_iterations)
        self.milestones = milestone_iterations(recipe, self.total)
        self.plateau_drops = 0
        self.best_error = math.inf
        self.evals_without_improvement = 0
        self.error_warmup = recipe.error_warmup_lr is not None
        self.error_warmup_ended_at: int | None = None

    def scheduled_lr(self, iteration: int) -> float:
        r, t, total = self.recipe, iteration, self.total
        if r.schedule == "step":
            return r.lr * r.gamma ** sum(t >= m for m in self.milestones)
        if r.schedule == "plateau":
            return r.lr * r.gamma**self.plateau_drops
        if r.schedule == "cosine":
            if t < r.warmup_iterations:
                return r.lr * (t + 1) / r.warmup_iterations
            progress = (t - r.warmup_iterations) / max(1, total - r.warmup_iterations)
            return 0.5 * r.lr * (1 + math.cos(math.pi * min(1.0, progress)))
        peak = max(1, round(r.peak_fraction * total))  # onecycle
        if t < peak:
            return r.lr * (0.1 + 0.9 * t / peak)
        return r.lr * max(0.0, (total - t) / max(1, total - peak))

    def lr(self, iteration: int) -> float:
        if self.error_warmup:
            return float(self.recipe.error_warmup_lr)  # type: ignore[arg-type]
        return self.scheduled_lr(iteration)

    def observe_train_error(self, iteration: int, recent_error_percent: float) -> bool:
        """End the error warm-up once training error falls below the threshold; True when it just ended."""
        if not self.error_warmup:
            return False
        r = self.recipe
        if recent_error_percent < r.error_warmup_threshold or iteration >= r.error_warmup_max_iterations:
            self.error_warmup = False
            self.error_warmup_ended_at = iteration
            return True
        return False

    def observe_eval_error(self, error_percent: float) -> None:
        if self.recipe.schedule != "plateau":
            return
        if error_percent < self.best_error - 1e-9:
            self.best_error, self.evals_without_improvement = error_percent, 0
            return
        self.evals_without_improvement += 1
        if self.evals_without_improvement >= self.recipe.plateau_patience:
            self.plateau_drops += 1
            self.evals_without_improvement = 0

    def state_dict(self) -> dict[str, Any]:
        return {"plateau_drops": self.plateau_drops, "best_error": self.best_error,
                "evals_without_improvement": self.evals_without_improvement, "error_warmup": self.error_warmup,
                "error_warmup_ended_at": self.error_warmup_ended_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class StatelessSchedule:
    """A schedule that is a pure function of the iteration (e.g. detection's warm-up and steps): nothing to save."""

    def __init__(self, lr: Callable[[int], float]) -> None:
        self.lr = lr

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
