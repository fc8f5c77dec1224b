"""The tree tells the architecture: imports run one way (app.py -> studio -> engines), with no circle.

Every import is read from the source with ``ast``, including the ones inside functions (a lazy
import still ties two modules together; ``trainer.py`` and ``training_loop.py`` once formed a
circle that way). Nothing is imported to run these checks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engines", "studio")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Names of every module ``path`` imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: {m for m in _imports(path, name, known) if m in known and m != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _package_of(module: str) -> str:
    """The folder a module sits in (a package's ``__init__`` belongs to its own folder)."""
    is_package = (ROOT / Path(*module.split(".")) / "__init__.py").is_file()
    return module if is_package else module.rpartition(".")[0]


def test_the_cycle_finder_finds_a_circle_through_a_lazy_import(tmp_path):
    # The check itself must be able to fail: a two-module circle, one side imported inside a function.
    a = tmp_path / "a.py"
    a.write_text("from b import thing\n")
    b = tmp_path / "b.py"
    b.write_text("def later():\n    from a import other\n")
    graph = {"a": _imports(a, "a", {"a", "b"}), "b": _imports(b, "b", {"a", "b"})}
    assert _cycles(graph) == [["a", "b"]]


def test_no_import_circle_between_modules():
    graph = _graph()
    assert len(graph) > 60  # the walk really read the tree
    assert "engines.origin.training.trainer" in graph["engines.origin.training.cli"]
    assert _cycles(graph) == []


def test_no_import_circle_between_folders():
    # The rooms of a package depend one way too: origin's model/ never imports training/ or generation/.
    graph = _graph()
    folders: dict[str, set[str]] = {}
    for module, targets in graph.items():
        here = _package_of(module)
        for target in targets:
            there = _package_of(target)
            # A folder and the folders inside it (dataset/ and dataset/sources/) are one room; the small
            # shared modules at the engines/ root are used by every room (context.py wires hardware/
            # and models/ together), so they are not a room of their own either.
            nested = here.startswith(there + ".") or there.startswith(here + ".")
            if here != there and not nested and "engines" not in (here, there):
                folders.setdefault(here, set()).add(there)
    assert _cycles(folders) == []
    model_imports = {t for m, ts in graph.items() if m.startswith("engines.origin.model") for t in ts}
    assert not {t for t in model_imports if t.startswith(("engines.origin.training", "engines.origin.generation"))}


def test_engines_never_import_gradio_or_studio():
    modules = _modules()
    known = set(modules)
    offenders = []
    for name, path in modules.items():
        if not name.startswith("engines"):
            continue
        for imported in _imports(path, name, known):
            top = imported.split(".")[0]
            if top in ("gradio", "gradio_client", "studio"):
                offenders.append(f"{name} imports {imported}")
    assert offenders == []


def test_engines_root_holds_only_the_packages_and_a_few_shared_modules():
    engines = ROOT / "engines"
    packages = sorted(p.name for p in engines.iterdir() if (p / "__init__.py").is_file())
    modules = sorted(p.stem for p in engines.glob("*.py") if p.stem != "__init__")
    assert {"hardware", "models", "dataset", "origin"} <= set(packages)
    assert len(modules) <= 7, modules
