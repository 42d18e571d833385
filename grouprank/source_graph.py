"""The project's import graph, read from the source (no import is executed), and the code a module
can run: every project module reachable from it.

Counted as an edge from module m to w:
- every `import` / `from ... import` that names w, at module level or inside a function;
- every module of m's own package when m imports its submodules by a name built at run time
  (`importlib.import_module(f"{__name__}.{mod}")`: the lazy `__getattr__` of `grouprank.llm`).

The stage cache key (`grouprank.executor.source_key`) hashes the files of a stage's reachable
modules, plus the `__init__.py` of the packages above them (`import a.b.c` runs `a/__init__.py` and
`a/b/__init__.py` first; their own code is counted, the modules they import are not: a stage that
uses them imports them by name) and the non-Python files (presets, templates) in their folders.
tests/test_import_graph.py checks the graph for cycles.
"""
from __future__ import annotations

import ast
from pathlib import Path

from grouprank.paths import REPO_ROOT

PACKAGES = ("grouprank", "data_schemas")  # the project's own top-level packages
DATA_SUFFIXES = (".yaml", ".yml", ".json", ".txt", ".jinja", ".jinja2", ".md")


def modules(root: Path = REPO_ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """dotted module name -> file, for every .py file of `packages` under `root`."""
    mods: dict[str, Path] = {}
    for pkg in packages:
        for p in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" in p.parts:
                continue
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    return mods


def import_graph(root: Path = REPO_ROOT, packages: tuple[str, ...] = PACKAGES,
                 ) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> modules it imports, module -> raw imported names)."""
    mods = modules(root, packages)

    def resolve(name: str) -> str | None:
        while name:
            if name in mods:
                return name
            name = name.rpartition(".")[0]
        return None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    names: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        is_pkg = p.name == "__init__.py"
        pkg = m if is_pkg else m.rpartition(".")[0]
        dynamic = False
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    b = pkg.split(".")
                    src = ".".join(b[: len(b) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [src + "." + a.name for a in node.names] + [src]
            elif isinstance(node, ast.Call):
                f = node.func
                fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                # a lazy import of the module's own submodules by name (f"{__name__}.{mod}")
                dynamic = dynamic or (fname in ("import_module", "__import__") and any(
                    isinstance(n, ast.Name) and n.id == "__name__" for a in node.args for n in ast.walk(a)))
            names[m].update(targets)
            for t in targets:
                r = resolve(t)
                if r and r != m and not m.startswith(r + "."):
                    graph[m].add(r)
        if dynamic:
            graph[m].update(w for w in mods if w.startswith(pkg + ".") and w != m)
    return graph, names


_GRAPHS: dict[str, tuple[tuple, tuple[dict[str, set[str]], dict[str, set[str]]]]] = {}


def cached_graph(root: Path = REPO_ROOT) -> dict[str, set[str]]:
    """`import_graph(root)[0]`, parsed again only when a source file changed (size or mtime)."""
    sig = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in modules(root).values())
    hit = _GRAPHS.get(str(root))
    if hit is None or hit[0] != sig:
        hit = _GRAPHS[str(root)] = (sig, import_graph(root))
    return hit[1][0]


def reachable(starts: list[str] | tuple[str, ...], graph: dict[str, set[str]]) -> set[str]:
    """The modules `starts` can import, themselves included."""
    seen: set[str] = set()
    todo = [s for s in starts if s in graph]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m] - seen)
    return seen


def source_files(starts: list[str] | tuple[str, ...], root: Path = REPO_ROOT) -> list[Path]:
    """The files whose content decides what `starts` compute: the .py files of every reachable
    module and the data files (presets, templates) in those modules' folders. Sorted."""
    mods = modules(root)
    graph = cached_graph(root)
    files: set[Path] = set()
    for m in reachable(starts, graph):
        p = mods[m]
        files.add(p)
        parts = m.split(".")
        files.update(mods[".".join(parts[:i])] for i in range(1, len(parts)) if ".".join(parts[:i]) in mods)
        files.update(f for f in p.parent.iterdir() if f.is_file() and f.suffix in DATA_SUFFIXES)
        for sub in p.parent.iterdir():  # data folders beside the module (e.g. reranker/presets/)
            if sub.is_dir() and sub.name != "__pycache__" and not (sub / "__init__.py").exists():
                files.update(f for f in sub.rglob("*") if f.is_file() and f.suffix in DATA_SUFFIXES)
    return sorted(files)
