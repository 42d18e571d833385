"""Scoring prompts, one module per scoring mode, shared by the judges and the reranker.

- `pointwise`  one query, one document: ``{"score": 0-10, "reason": …}`` (the pointwise judge)
- `listwise`   RankGPT-style ranking of a window: ``[3] > [1] > [2]`` (listwise judge and reranker)
- `groupwise`  the GroupRank format: ``<reason>…</reason><answer>{"[1]": 7, …}</answer>`` for a
               group of c documents (groupwise judge, reranker inference, training data, reward)
- `scale`      the 0–10 usefulness-then-relevance scale, quoted by pointwise and groupwise
- `common`     rendering of query and documents (whitespace collapsed, cut, reserved tags
               defused), the inverse reader, `<think>` stripping

Each mode module exposes `TEMPLATE_VERSION` (part of the LLM cache key: bump it whenever the
prompt text or the expected answer changes), `SYSTEM_PROMPT`, `build_messages(...)` and its
parser(s). The text a document contributes is `grouprank.text.document_text(title, text)`,
built by the caller. How candidates are cut into calls (groups, windows) is `grouprank.scoring`.
"""
