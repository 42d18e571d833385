"""Groupwise scoring (GroupRank; prompt `grouprank.prompts.groupwise`): per query and pass,
shuffle the candidates with `seeded_rng(seed, "groupwise", query_id, pass)`, cut them into
ceil(N/c) disjoint groups of near-equal size (`groups.split_groups`), score every group in one
call (0–10 per document). Several passes reshuffle; a consumer averages over them. The same seed
gives the same groups in the judge and in the reranker."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from grouprank.prompts import groupwise as T

from .call import Call, Scored, no_answer
from .groups import shuffled_groups
from .rng import seeded_rng


class GroupwiseMode:
    kind = "groupwise"
    template_version = T.TEMPLATE_VERSION

    def __init__(self, *, group_size: int, passes: int, seed: int, max_doc_chars: int = 3000):
        if seed is None:  # would seed every run alike
            raise ValueError("groupwise scoring needs a seed (the run's seed)")
        self.group_size, self.passes, self.seed, self.max_doc_chars = group_size, passes, seed, max_doc_chars

    def groups(self, query_id: str, doc_ids: Sequence[str], pass_index: int) -> list[list[str]]:
        """The groups of one query and pass."""
        return shuffled_groups(doc_ids, self.group_size, seeded_rng(self.seed, "groupwise", query_id, pass_index))

    def plan(self, pools: Mapping[str, list[str]], queries: Mapping[str, str],
             doc_text: Mapping[str, str]) -> list[Call]:
        """Every group of every query and pass (passes outermost, then queries in `pools` order)."""
        calls = []
        for p in range(self.passes):
            for qid, dids in pools.items():
                for gi, grp in enumerate(self.groups(qid, dids, p)):
                    msgs = T.build_messages(queries[qid], [doc_text[d] for d in grp], self.max_doc_chars)
                    calls.append(Call(qid, grp, msgs, T.validator(len(grp)), f"p{p}g{gi}", p))
        return calls

    def parse(self, text: str | None, n: int) -> Scored:
        """Scores of the documents the answer scores validly: all of a well-formed answer, the
        valid entries of one with bad entries (status bad_json); none when the tags are broken."""
        if text is None:
            return no_answer(n)
        pg = T.parse_output(text, n)
        if pg.status == "bad_tags":
            return Scored([None] * n, pg.status, None, pg.error)
        return Scored(list(pg.scores), pg.status, pg.reason, pg.error)
