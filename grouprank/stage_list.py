"""The pipeline: the stage list, in order. Adding a stage = a package declaring `STAGE` + one line here.

The wiring is derived, not written: an input is fed by the earlier stage whose output has the same
name. The in-process runner (`grouprank.executor`), the Prefect flows and deployments (`flows/`),
the CLI's stage commands and the benches are all built from this list.
"""
from __future__ import annotations

from functools import lru_cache

from grouprank.stage import Stage


@lru_cache(maxsize=1)
def all_stages() -> dict[str, Stage]:
    """name -> Stage, in pipeline order (a topological order of the wiring)."""
    from grouprank.adaptation.stage import STAGE as adapt
    from grouprank.collections.stage import STAGE as load
    from grouprank.evaluation.stage import STAGE as evaluate
    from grouprank.first_stage.stage import STAGE as retrieve
    from grouprank.judges.fuse_stage import STAGE as fuse
    from grouprank.judges.stage import STAGE as judge
    from grouprank.queries.stage import STAGE as mine_queries
    from grouprank.reranker.stage import STAGE as train_reranker
    from grouprank.retriever_training.stage import STAGE as train_retriever
    from grouprank.trainsets.export_stage import STAGE as export
    from grouprank.trainsets.stage import STAGE as build_datasets
    order = [load, mine_queries, retrieve, judge, fuse, build_datasets, export, train_retriever,
             train_reranker, evaluate, adapt]
    out = {s.name: s for s in order}
    if len(out) != len(order):
        raise ValueError("two stages share a name")
    wiring(tuple(order))  # fail at import on a dangling or ambiguous input
    return out


def wiring_of(name: str) -> dict[str, tuple[str, str]]:
    """input name -> (producing stage, output name) for one stage."""
    return _wiring()[name]


@lru_cache(maxsize=1)
def _wiring() -> dict[str, dict[str, tuple[str, str]]]:
    return wiring(tuple(all_stages().values()))


def wiring(order: tuple[Stage, ...]) -> dict[str, dict[str, tuple[str, str]]]:
    producers: dict[str, str] = {}
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for st in order:
        w: dict[str, tuple[str, str]] = {}
        for p in st.inputs:
            if p.name not in producers:
                if p.optional:  # fed only from a file (`--<input> PATH`, or the executor's inputs)
                    continue
                raise ValueError(f"stage {st.name!r}: no earlier stage produces input {p.name!r}")
            w[p.name] = (producers[p.name], p.name)
        out[st.name] = w
        for p in st.outputs:
            if p.name in producers:
                raise ValueError(f"output {p.name!r} declared by both {producers[p.name]!r} and {st.name!r}")
            producers[p.name] = st.name
    return out


def upstream(name: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for s, _ in wiring_of(name).values()))


def plan(targets: tuple[str, ...] | list[str] | None) -> list[Stage]:
    """The stages needed for `targets` (every stage when None/empty), in pipeline order."""
    every = all_stages()
    if not targets:
        return list(every.values())
    unknown = [t for t in targets if t not in every]
    if unknown:
        raise KeyError(f"unknown stage(s) {unknown}; the pipeline has {list(every)}")
    need: set[str] = set()
    todo = list(targets)
    while todo:
        s = todo.pop()
        if s not in need:
            need.add(s)
            todo.extend(upstream(s))
    return [st for n, st in every.items() if n in need]


def levels(stage_list: list[Stage]) -> list[list[Stage]]:
    """Waves of stages: each wave depends only on earlier waves (siblings can run in parallel)."""
    names = {s.name for s in stage_list}
    depth: dict[str, int] = {}
    for s in stage_list:  # pipeline order is topological
        depth[s.name] = 1 + max((depth[u] for u in upstream(s.name) if u in names), default=-1)
    out: list[list[Stage]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for s in stage_list:
        out[depth[s.name]].append(s)
    return out
