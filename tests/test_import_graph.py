"""No import cycles among grouprank's modules or its first-level packages, counting every import
(also those inside functions), and no Prefect in the library."""
from __future__ import annotations

from pathlib import Path

from grouprank.source_graph import import_graph as source_import_graph
from grouprank.source_graph import modules

ROOT = Path(__file__).resolve().parents[1] / "grouprank"


def _modules(root: Path) -> dict[str, Path]:
    return modules(root.parent, (root.name,))


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module graph, raw imported names per module): the graph the cache keys use."""
    return source_import_graph(root.parent, (root.name,))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    pg: dict[str, set[str]] = {}
    for m, ws in graph.items():
        pg.setdefault(top(m), set())
        for w in ws:
            if top(m) != top(w):
                pg[top(m)].add(top(w))
                pg.setdefault(top(w), set())
    return pg


def test_cycle_finder_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from toy.b import y\n")  # inside a function
    (pkg / "b.py").write_text("from .a import x\n")
    g, _ = import_graph(pkg)
    assert cycles(g) == [["toy.a.x", "toy.b"]]
    assert cycles(package_graph(g)) == [["toy.a", "toy.b"]]


def test_no_import_cycles_in_grouprank():
    g, _ = import_graph()
    assert cycles(g) == [], "module import cycles"
    assert cycles(package_graph(g)) == [], "package import cycles"


def test_library_never_imports_prefect():
    _, names = import_graph()
    offenders = {m for m, ns in names.items() if any(n == "prefect" or n.startswith("prefect.") for n in ns)}
    assert not offenders, offenders


def confusable(names: set[str]) -> list[tuple[str, str]]:
    """Pairs of names that differ only by a short suffix (retrieval/retriever, mine/mining, stage/stages);
    checked among the modules and packages of one package."""
    out = []
    for a in sorted(names):
        for b in sorted(names):
            if a >= b:
                continue
            n = 0
            while n < min(len(a), len(b)) and a[n] == b[n]:
                n += 1
            if n >= 3 and len(a) - n <= 3 and len(b) - n <= 3:
                out.append((a, b))
    return out


def test_confusable_finder_and_no_confusable_module_names():
    assert confusable({"retrieval", "retriever", "mine", "mining", "stage", "stages", "local_judge",
                       "local_scorer", "stage_list"}) == [("mine", "mining"), ("retrieval", "retriever"),
                                                          ("stage", "stages")]
    siblings: dict[str, set[str]] = {}
    for name in _modules(ROOT):
        parent, _, leaf = name.rpartition(".")
        siblings.setdefault(parent, set()).add(leaf)
    assert {p: confusable(n) for p, n in siblings.items() if confusable(n)} == {}
    assert not list(ROOT.rglob("local_responder.py")) and not list(ROOT.rglob("*fake*server*.py"))
