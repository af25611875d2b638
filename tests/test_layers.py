"""The package's layering, read from the source with `ast`: every internal import (also those inside functions)
goes to its own layer or below, and no chain of imports between files comes back to where it started."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "resnets"
# Lowest first: io/runtime < models, data < runs < train, evaluate < analysis, deploy, detection < cli and the root.
LAYERS = [
    {"io", "runtime", "version"},
    {"models", "data", "plots"},
    {"runs"},
    {"train", "evaluate"},
    {"analysis", "deploy", "detection"},
    {"cli", "__init__", "__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} is in no layer; add its top-level name to LAYERS")


def internal_imports(path: Path) -> set[str]:
    """Modules of this package that `path` imports, resolved to files (a package means its __init__)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate.split(".")[0] == "resnets" and candidate in modules:
                found.add(candidate)
    return found - {this}


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): internal_imports(path) for path in PACKAGE.rglob("*.py")}


def test_every_import_goes_to_the_same_layer_or_below() -> None:
    upward = [f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
              for source, targets in import_graph().items() for target in sorted(targets)
              if layer(target) > layer(source)]
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if target.startswith(node + "."):  # a package's __init__ importing its own submodules is no cycle
                continue
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_files() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(graph) == expected


# One engine: only the training loop steps a model and writes training checkpoints. Benchmarks of a training step
# (deploy/bench.py) call .backward( too; files written with torch.save are the few kinds listed here.
BACKWARD_CALLERS = {"resnets.train.loop", "resnets.deploy.bench"}
TORCH_FILE_WRITERS = {"resnets.io", "resnets.train.checkpoint", "resnets.models.weights", "resnets.data.decoded",
                      "resnets.analysis.ship", "resnets.detection.inference"}


def called_names(path: Path) -> set[str]:
    """Names of the functions and methods `path` calls: `f` for `f(...)` and `x.f(...)`, also `x.f` for the latter."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Attribute):
                names.add(function.attr)
                if isinstance(function.value, ast.Name):
                    names.add(f"{function.value.id}.{function.attr}")
            elif isinstance(function, ast.Name):
                names.add(function.id)
    return names


def callers(name: str) -> set[str]:
    return {module_name(path) for path in PACKAGE.rglob("*.py") if name in called_names(path)}


def test_only_the_training_loop_steps_and_checkpoints() -> None:
    assert callers("backward") <= BACKWARD_CALLERS, callers("backward") - BACKWARD_CALLERS
    assert callers("save_training_checkpoint") == {"resnets.train.loop"}
    writers = callers("atomic_torch_save") | callers("torch.save")
    assert writers <= TORCH_FILE_WRITERS, f"{writers - TORCH_FILE_WRITERS} write torch files; checkpoints belong to " \
                                          "train/loop.py (train/checkpoint.py), weights to models/weights.py"
