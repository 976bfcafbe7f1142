"""The shape of the code (docs/development.md): no import cycles, small functions, a light CLI, one registry."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "lobell").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every lobell -> lobell import, lazy ones inside functions included (they still form a cycle);
    a submodule needing its own package is not an edge; TYPE_CHECKING imports are left out."""

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = [ast.Pass()]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for name in names:
                target = owner(name) if name.startswith("lobell") else None
                if target and target != mod and not mod.startswith(target + "."):
                    graph[mod].add(target)
    return graph


def _cycles(graph: dict[str, set[str]], nodes) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    mods = _modules()
    assert _cycles(_import_graph(mods), mods) == []


def test_the_cycle_check_can_fail():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph, ["a", "b", "c", "d"]) == [["a", "b", "c"]]


def test_no_function_over_60_lines():
    long = [f"{path.relative_to(SRC)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in _modules().values() for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60]
    assert long == []


def _imports_of(*args: str) -> str:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "lobell", *args], capture_output=True,
                            text=True, timeout=300)
    return result.stderr


def test_help_and_config_errors_import_no_torch(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model: x\ntask: text-classification\nepohcs: 3\n")
    for args in (["--help"], ["recipe", "--help"], ["validate", str(typo)]):
        log = _imports_of(*args)
        heavy = [line for line in log.splitlines() if line.rstrip().split("|")[-1].strip() in
                 ("torch", "transformers", "peft")]
        assert heavy == [], (args, heavy)
    assert "unknown key 'epohcs' (did you mean 'epochs'?)" in _imports_of("validate", str(typo))


def test_every_task_is_one_registry_entry():
    from lobell.config import TASKS as CONFIG_TASKS
    from lobell.problems import PROBLEMS
    from lobell.tasks import MODALITIES, TASKS

    assert set(TASKS) == set(CONFIG_TASKS)  # the config validates exactly the tasks the registry runs
    for modality, problem in TASKS.values():
        assert modality in MODALITIES and problem in PROBLEMS
    for spec in MODALITIES.values():
        for method in ("input_column", "reader", "build_adapter", "load_adapter", "dataset", "loader"):
            assert callable(getattr(spec, method)), (spec.name, method)


def test_training_package_imports_and_train_is_the_function():
    import lobell
    import lobell.training.loop  # noqa: F401 (the package no longer shadows lobell.train)

    assert callable(lobell.train) and lobell.train.__module__ == "lobell.training.runner"
