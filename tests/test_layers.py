"""The layers of docs/architecture.md hold: no module imports a higher layer, and no imports
form a cycle. Imports are read with `ast` (nothing is imported), including those inside
functions and under ``TYPE_CHECKING``: a lazy import upwards is still an upward dependency."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lmkit"

# Top to bottom, as drawn in docs/architecture.md. A module belongs to the first layer whose
# prefix names it or a package above it; `lmkit` itself (the lazy facade) stands above all.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("front ends", ("lmkit.cli", "lmkit.notebook")),
    ("API", ("lmkit.api",)),
    ("clients", ("lmkit.training", "lmkit.evaluation", "lmkit.exporters")),
    ("engine", ("lmkit.engine",)),
    ("components", ("lmkit.registry", "lmkit.resolve", "lmkit.models", "lmkit.build",
                    "lmkit.optim", "lmkit.schedules", "lmkit.losses", "lmkit.token_metrics",
                    "lmkit.tokenizers", "lmkit.generation", "lmkit.pretrained",
                    "lmkit.distribute", "lmkit.param_groups", "lmkit.train_step")),
    ("data", ("lmkit.data",)),
    ("base", ("lmkit.config", "lmkit.errors", "lmkit.paths", "lmkit._lazy")),
]


def modules(package: Path) -> dict[str, Path]:
    found = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the lmkit modules it imports (a `from a import b` counts `a.b` when it is one)."""
    mods = modules(package)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[:len(pkg) - node.level + 1]
                    base = ".".join([*pkg, base] if base else pkg)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                # `import lmkit.x.y` depends on lmkit.x.y (its parents' __init__ are facades)
                if target in mods and target != name and target != "lmkit":
                    graph[name].add(target)
    return graph


def layer_of(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(package: Path) -> list[str]:
    graph = import_graph(package)
    problems = [f"{m} is in no layer: add it to LAYERS and docs/architecture.md"
                for m in sorted(graph) if m != "lmkit" and layer_of(m) is None]
    for module, targets in sorted(graph.items()):
        if module == "lmkit" or layer_of(module) is None:
            continue
        for target in sorted(targets):
            if layer_of(target) is not None and layer_of(target) < layer_of(module):
                problems.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                                f"({LAYERS[layer_of(target)][0]}), a higher layer")
    problems += [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    return problems


def test_no_module_imports_a_higher_layer_and_no_imports_form_a_cycle() -> None:
    assert violations(PACKAGE) == []


def test_the_check_fails_when_an_upward_import_or_a_cycle_is_added(tmp_path: Path) -> None:
    copy = tmp_path / "lmkit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.txt"))
    assert violations(copy) == []
    engine = copy / "engine" / "engine.py"
    engine.write_text(engine.read_text() + "\n\ndef _late():\n    from lmkit.api import train\n")
    corpus = copy / "data" / "corpus.py"
    corpus.write_text(corpus.read_text() + "\nfrom lmkit.data.tokens import token_ids\n")
    (copy / "engine" / "stray.py").write_text("")
    found = violations(copy)
    assert "lmkit.engine.engine (engine) imports lmkit.api (API), a higher layer" in found
    assert any(p.startswith("import cycle: ") and "lmkit.data.corpus" in p and "lmkit.data.tokens" in p
               for p in found)
    assert "lmkit.engine.stray is in no layer: add it to LAYERS and docs/architecture.md" not in found
    (copy / "stray.py").write_text("")
    assert "lmkit.stray is in no layer: add it to LAYERS and docs/architecture.md" in violations(copy)


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_every_layer_is_named_in_the_architecture_document(layer: str) -> None:
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    prefixes = dict(LAYERS)[layer]
    assert layer in doc
    for prefix in prefixes:
        assert "lmkit/" + prefix.removeprefix("lmkit.").replace(".", "/") in doc, prefix
