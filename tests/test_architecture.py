"""The package layout is the architecture: imports flow one way, from entry points down to the core.

Layers, lowest first: core -> reward, generation -> evaluation, rm_eval -> rl -> entry points (cli, commands,
quickstart, trl_adapter). A module may import its own layer or lower ones, never a higher one, and the module
import graph (lazy imports inside functions included) has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "endo_rl"
LAYER = {"core": 0, "reward": 1, "generation": 1, "evaluation": 2, "rm_eval": 2, "rl": 3}
ENTRY_LAYER = 4  # cli, commands, quickstart, trl_adapter, the package itself


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYER.get(parts[1], ENTRY_LAYER) if len(parts) > 1 else ENTRY_LAYER


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every endo_rl module `path` imports, at top level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("endo_rl")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("endo_rl"):
            for (
                a
            ) in node.names:  # `from endo_rl.rl import trainer` names a module; `from x import f` does not
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return out & known


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}


def test_no_import_runs_up_a_layer():
    upward = [
        f"{mod} (layer {layer(mod)}) imports {dep} (layer {layer(dep)})"
        for mod, deps in import_graph().items()
        for dep in deps
        if layer(dep) > layer(mod)
    ]
    assert not upward, "\n".join(upward)


def test_import_graph_has_no_cycle():
    graph = import_graph()
    graph = {
        m: {d for d in deps if graph.get(d) is not None and not m.startswith(d + ".")}
        for m, deps in graph.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if dep.count(".") < node.count(".") and node.startswith(dep):
                continue
            if state.get(dep) == 1:
                return [*path, node, dep]
            if dep not in state and (cycle := visit(dep, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_graph_sees_lazy_imports():
    """Guard against a checker that checks nothing: a known lazy import must be in the graph."""
    graph = import_graph()
    assert "endo_rl.generation.static" in graph["endo_rl.generation.sampling"]
    assert "endo_rl.core.errors" in graph["endo_rl.rl.trainer"]


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_files_and_functions_stay_small():
    """STYLE.md: files under ~400 lines, functions under ~60. A unit past that holds two ideas."""
    too_big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if source.count("\n") > MAX_FILE_LINES:
            too_big.append(f"{path.relative_to(PACKAGE.parent)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_big.append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {length} lines"
                    )
    assert not too_big, "\n".join(too_big)


# the CLI subcommand protocol, and load/save (of a config, a checkpoint): the same verb on different things
SHARED_NAMES = {"add_arguments", "run", "main", "load", "save"}


def test_each_public_name_is_defined_once():
    """A class or function name means one thing across the package (no two `EvalSettings` or `Problem`)."""
    where: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(str(path.relative_to(PACKAGE.parent)))
    repeated = {name: paths for name, paths in where.items() if len(paths) > 1 and name not in SHARED_NAMES}
    assert not repeated, repeated
