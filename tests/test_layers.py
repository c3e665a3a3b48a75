"""The layers of docs/architecture.md hold: no module imports a higher layer, no imports form a
cycle, and the front ends import only the API and the engine's events. Imports are read with
`ast` (nothing is imported), including those inside functions and under ``TYPE_CHECKING``: a
lazy import upwards is still an upward dependency."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lmkit"

# Top to bottom, as drawn in docs/architecture.md. A module belongs to the first layer whose
# prefix names it or a package above it; the facade is `lmkit` itself (lmkit/__init__.py) only.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("facade", ("lmkit",)),
    ("front ends", ("lmkit.cli", "lmkit.notebook")),
    ("API", ("lmkit.api",)),
    ("clients", ("lmkit.training", "lmkit.evaluation", "lmkit.exporters", "lmkit.sweeps")),
    ("engine", ("lmkit.engine",)),
    ("components", ("lmkit.registry", "lmkit.resolve", "lmkit.models", "lmkit.build",
                    "lmkit.optim", "lmkit.schedules", "lmkit.losses", "lmkit.token_metrics",
                    "lmkit.tokenizers", "lmkit.forward", "lmkit.generation", "lmkit.decoding", "lmkit.pretrained",
                    "lmkit.distribute", "lmkit.param_groups", "lmkit.train_step",
                    "lmkit.adapters")),
    ("data", ("lmkit.data",)),
    ("base", ("lmkit.config", "lmkit.errors", "lmkit.paths", "lmkit._lazy", "lmkit._scoped")),
]
FRONT_ENDS = "front ends"
#: all that a front end may import besides other front-end modules
FRONT_END_IMPORTS = ("lmkit.api", "lmkit.engine.events")


def modules(package: Path) -> dict[str, Path]:
    found = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the lmkit modules it imports. `from a import b` counts the module `a.b` when it
    is one (importing a package's submodule runs the package's __init__, a lazy facade, which is
    no dependency), else `a`: so `from lmkit import train` and `import lmkit` count the facade."""
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
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                # `import lmkit.x.y` depends on lmkit.x.y (its parents' __init__ are facades)
                if target in mods and target != name:
                    graph[name].add(target)
    return graph


def layer_of(module: str) -> int | None:
    for rank, (layer, prefixes) in enumerate(LAYERS):
        if module in prefixes or (layer != "facade" and any(module.startswith(p + ".") for p in prefixes)):
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
                for m in sorted(graph) if layer_of(m) is None]
    for module, targets in sorted(graph.items()):
        if layer_of(module) is None:
            continue
        for target in sorted(targets):
            if layer_of(target) is not None and layer_of(target) < layer_of(module):
                problems.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                                f"({LAYERS[layer_of(target)][0]}), a higher layer")
            elif (LAYERS[layer_of(module)][0] == FRONT_ENDS and target not in FRONT_END_IMPORTS
                  and layer_of(target) != layer_of(module)):
                problems.append(f"{module} (front ends) imports {target}: a front end imports only "
                                f"{' and '.join(FRONT_END_IMPORTS)}; add what it needs to lmkit.api")
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


def test_the_check_fails_when_a_front_end_reaches_past_the_api(tmp_path: Path) -> None:
    copy = tmp_path / "lmkit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.txt"))
    magics = copy / "notebook" / "magics.py"
    magics.write_text(magics.read_text() + "\n\ndef _late():\n    import lmkit\n"
                      "    from lmkit.registry import tasks\n    from lmkit.engine.events import StopSignal\n")
    cli = copy / "cli" / "eval.py"
    cli.write_text(cli.read_text() + "\nfrom lmkit import train\nfrom lmkit.cli import launch\n")
    found = violations(copy)
    assert "lmkit.notebook.magics (front ends) imports lmkit (facade), a higher layer" in found
    assert "lmkit.cli.eval (front ends) imports lmkit (facade), a higher layer" in found
    assert ("lmkit.notebook.magics (front ends) imports lmkit.registry: a front end imports only "
            "lmkit.api and lmkit.engine.events; add what it needs to lmkit.api") in found
    assert not any("lmkit.engine.events:" in p or "imports lmkit.cli.launch" in p for p in found)
    # the facade loads the magics (`%load_ext lmkit`), so importing it back is a cycle as well
    assert "import cycle: lmkit <-> lmkit.notebook.extension <-> lmkit.notebook.magics" in found
    assert len(found) == 4


def test_a_package_submodule_imported_from_the_package_is_no_facade_import(tmp_path: Path) -> None:
    copy = tmp_path / "lmkit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.txt"))
    corpus = copy / "data" / "corpus.py"
    corpus.write_text(corpus.read_text() + "\nfrom lmkit import paths\n")
    assert violations(copy) == []
    assert "lmkit.paths" in import_graph(copy)["lmkit.data.corpus"]


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_every_layer_is_named_in_the_architecture_document(layer: str) -> None:
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    prefixes = dict(LAYERS)[layer]
    assert layer in doc
    for prefix in prefixes:
        path = "lmkit/__init__.py" if prefix == "lmkit" else "lmkit/" + prefix.removeprefix("lmkit.").replace(".", "/")
        assert path in doc, prefix
