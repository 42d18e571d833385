"""Reranking with an LLM: groupwise (GroupRank), pointwise and listwise (sliding window).

Prompts: `grouprank.prompts` (shared with the judges). Document texts: the caller passes
{doc_id: text}, built with `grouprank.text.document_text_map(documents)` so the reranker sees the
string the judges and the retrievers see.

Groupwise (DESIGN §2, the authors' inference code):
  for each query take the top-N first-stage candidates (N = `top`, default 100); for each pass
  shuffle them (seeded per query and pass) and cut them into ceil(N/c) disjoint groups of
  near-equal size (`grouprank.scoring.groups`: sizes differ by at most one, so no group of 1–2
  stragglers); score every group
  of every query and pass concurrently (one backend batch: O(N/c) calls per query and pass, one
  sequential round); a document's group score is its 0–10 score / 10 averaged over the passes
  (test-time scaling).
  **Fallback:** a group whose answer is not well formed (`parse_output(...).status != "ok"`,
  after the client's one retry) or whose call failed gives every document of that group 0 for
  that pass, as the authors' code does; it never raises. Partial JSON is not used.
  Final score = alpha · group + (1 − alpha) · minmax(first-stage score within the query)
  (alpha = 0.6); ties broken by first-stage rank.

Pointwise: the same groupwise template with a group of one document (so the comparison isolates
  the grouping): N calls per query, one round; fallback 0; same fusion with alpha.

Listwise (RankGPT-style sliding window, the listwise prompt `judge.listwise@1` of the judges):
  windows of `window` documents moving from the bottom of the first-stage list to the top by
  `stride` (`grouprank.scoring.windows`); each window is reordered by the model's permutation `[3] > [1] > …`; identifiers missing from the answer keep their
  relative order after the mentioned ones; an unparsable answer leaves the window unchanged.
  Windows of one query are sequential (ceil((N − window)/stride) + 1 rounds); queries run in
  parallel round by round. The final ranking is the permutation (score = (N − rank + 1) / N);
  alpha does not apply.

Backends: `LLMBackend` (the project's `grouprank.llm.LLMClient`: concurrency, retries, cache,
token accounting), `TransformersBackend` (an in-process causal LM, e.g. the trained reranker),
`FunctionBackend` (a Python callable; tests).

Every call is accounted: per query `calls`, `rounds`, `prompt_tokens`, `completion_tokens`,
`failed` (calls whose answer fell back).
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from grouprank.first_stage.fusion import minmax
from grouprank.prompts import groupwise as GW
from grouprank.prompts import listwise as LW
from grouprank.scoring.groups import shuffled_groups
from grouprank.scoring.windows import sliding_windows

# --------------------------------------------------------------------------- backends

@dataclass
class GenRequest:
    messages: list[dict]
    template_version: str
    validate: Callable[[str], Any] | None = None   # raise grouprank.llm.ParseError on a bad answer
    #                                                (the LLM backend asks once more); other backends ignore it
    tag: str = "rerank"


@dataclass
class Generation:
    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class FunctionBackend:
    """Backend from a callable `fn(messages) -> str` (tests, local judges). Token counts use
    `count_tokens(text)` when given (else whitespace words)."""

    name = "function"

    def __init__(self, fn: Callable[[list[dict]], str], count_tokens: Callable[[str], int] | None = None):
        self.fn = fn
        self.count = count_tokens or (lambda s: len(s.split()))

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        out = []
        for r in requests:
            p = sum(self.count(m["content"]) for m in r.messages)
            try:
                t = self.fn(r.messages)
            except Exception as e:  # a failing model never crashes the reranker
                out.append(Generation(None, p, 0, f"{type(e).__name__}: {e}"))
                continue
            out.append(Generation(t, p, self.count(t or "")))
        return out


class LLMBackend:
    """The project's LLM client (`grouprank.llm.LLMClient`) against an OpenAI-compatible endpoint."""

    name = "llm"

    def __init__(self, client=None, *, endpoint=None, cache_path=None, temperature: float | None = 0.3,
                 top_p: float | None = 0.8, max_tokens: int | None = None, stage: str = "reranker"):
        if client is None:
            from grouprank.llm import LLMClient
            client = LLMClient(endpoint, cache_path, stage=stage)
        self.client = client
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        from grouprank.llm import LLMRequest

        reqs = [LLMRequest(messages=r.messages, template_version=r.template_version, validate=r.validate,
                           temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, tag=r.tag)
                for r in requests]
        from grouprank.progress import Progress
        prog = Progress("rerank (llm)", len(reqs), unit="prompts", bar=False, heartbeat=True)
        out = []
        for res in self.client.map(reqs):
            out.append(Generation(res.text if res.status == "ok" else None, int(res.prompt_tokens or 0),
                                  int(res.completion_tokens or 0), None if res.status == "ok" else res.error))
            prog.update(1)
        prog.close()
        return out


class TransformersBackend:
    """An in-process causal LM (e.g. the trained reranker): chat template, batched generate."""

    name = "transformers"

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 512, temperature: float | None = None,
                 top_p: float | None = None, batch_size: int = 8):
        self.model, self.tok = model, tokenizer
        self.max_new_tokens, self.temperature, self.top_p, self.batch_size = max_new_tokens, temperature, top_p, batch_size

    @classmethod
    def from_path(cls, path: str, *, dtype: str = "auto", **kw) -> "TransformersBackend":
        """A trained checkpoint folder, or anything `reranker.base_model` takes (`smollm2`, a .gguf
        file, a model folder or HF id: the zero-shot policy). `dtype`: auto | float32 | bfloat16."""
        from grouprank.reranker.policy import load_policy, resolve
        src = resolve(str(path))
        if src.is_tiny:
            raise ValueError("the tiny policy exists only during training: pass its saved checkpoint folder")
        model, tok = load_policy(src, dtype=dtype)
        if dtype != "auto" and src.gguf_file is None:
            import torch
            model = model.to(getattr(torch, dtype))
        return cls(model, tok, **kw)

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        import torch
        tok, model = self.tok, self.model
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model.eval()
        import contextlib
        # bf16 weights on CPU: autocast keeps the few float32 ops (norms, rotary) in bf16 too
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if (model.device.type == "cpu" and
                                                               model.dtype == torch.bfloat16) else contextlib.nullcontext()
        from grouprank.progress import Progress
        prog = Progress("rerank (transformers)", len(requests), unit="prompts", bar=False, heartbeat=True)
        out: list[Generation] = []
        for s in range(0, len(requests), self.batch_size):
            batch = requests[s:s + self.batch_size]
            texts = [tok.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in batch]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            sample = bool(self.temperature)
            kw: dict[str, Any] = dict(max_new_tokens=self.max_new_tokens, do_sample=sample,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            if sample:
                kw.update(temperature=self.temperature, top_p=self.top_p or 1.0)
            else:
                kw.update(temperature=None, top_p=None, top_k=None)
            with torch.no_grad(), ctx:
                gen = model.generate(**enc, **kw)
            n_in = enc["input_ids"].shape[1]
            for i in range(len(batch)):
                new = gen[i, n_in:]
                n_new = int((new != tok.pad_token_id).sum()) if tok.pad_token_id != tok.eos_token_id else len(new)
                text = tok.decode(new, skip_special_tokens=True)
                out.append(Generation(text, int(enc["attention_mask"][i].sum()), n_new))
            prog.update(len(batch))
        prog.close()
        return out


# --------------------------------------------------------------------------- helpers

def _rng(seed: int, *parts) -> random.Random:
    """The reranker's shuffle seed per (seed, query, pass): sha256 of "seed|query|pass"."""
    h = hashlib.sha256(("|".join(map(str, (seed, *parts)))).encode()).hexdigest()
    return random.Random(int(h[:16], 16))


# --------------------------------------------------------------------------- reranking

@dataclass
class RerankResult:
    run: list[dict]                                  # query_id, doc_id, score, rank, system
    per_query: dict[str, dict] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _account(per_q: dict, qid: str, g: Generation, failed: bool) -> None:
    s = per_q.setdefault(qid, {"calls": 0, "rounds": 0, "prompt_tokens": 0, "completion_tokens": 0, "failed": 0})
    s["calls"] += 1
    s["prompt_tokens"] += g.prompt_tokens
    s["completion_tokens"] += g.completion_tokens
    s["failed"] += int(failed)


def _fuse(qid: str, cands: list[tuple[str, float]], model_score: dict[str, float], alpha: float,
          system: str) -> list[dict]:
    first = minmax([s for _, s in cands])
    rows = [(d, alpha * model_score.get(d, 0.0) + (1 - alpha) * f, r) for r, ((d, _), f) in enumerate(zip(cands, first))]
    rows.sort(key=lambda x: (-x[1], x[2]))
    return [{"query_id": qid, "doc_id": d, "score": float(s), "rank": i, "system": system}
            for i, (d, s, _) in enumerate(rows, 1)]


def _prepare(candidates: dict[str, list[tuple[str, float]]], top: int) -> dict[str, list[tuple[str, float]]]:
    out = {}
    for qid, c in candidates.items():
        c = sorted(c, key=lambda x: -x[1])[:top]
        if c:
            out[qid] = c
    return out


def rerank_groupwise(candidates, queries: dict[str, str], doc_text: dict[str, str], backend, *,
                     group_size: int = 20, passes: int = 1, alpha: float = 0.6, top: int = 100, seed: int = 13,
                     max_doc_chars: int = 3000, system: str = "groupwise", **_) -> RerankResult:
    cands = _prepare(candidates, top)
    reqs, meta = [], []
    for qid, c in cands.items():
        for p in range(passes):
            for group in shuffled_groups([d for d, _ in c], group_size, _rng(seed, qid, p)):
                msgs = GW.build_messages(queries[qid], [doc_text.get(d, "") for d in group], max_doc_chars)
                reqs.append(GenRequest(msgs, GW.TEMPLATE_VERSION, GW.validator(len(group)), tag="rerank.groupwise"))
                meta.append((qid, p, group))
    gens = backend.generate(reqs) if reqs else []
    per_q: dict[str, dict] = {}
    sums: dict[str, dict[str, float]] = {q: {} for q in cands}
    status_counts = {"ok": 0, "bad_json": 0, "bad_tags": 0, "call_failed": 0}
    for (qid, p, group), g in zip(meta, gens, strict=True):
        parsed = GW.parse_output(g.text, len(group)) if g.text is not None else None
        ok = parsed is not None and parsed.status == "ok"
        status_counts["call_failed" if parsed is None else parsed.status] += 1
        _account(per_q, qid, g, not ok)
        for i, d in enumerate(group):
            sums[qid][d] = sums[qid].get(d, 0.0) + ((parsed.scores[i] / 10.0) if ok else 0.0)  # fallback 0
    run = []
    for qid, c in cands.items():
        per_q[qid]["rounds"] = 1
        avg = {d: v / passes for d, v in sums[qid].items()}
        run += _fuse(qid, c, avg, alpha, system)
    return RerankResult(run, per_q, _summary(per_q, status_counts, "groupwise"))


def rerank_pointwise(candidates, queries, doc_text, backend, *, alpha: float = 0.6, top: int = 100,
                     max_doc_chars: int = 3000, system: str = "pointwise", **_) -> RerankResult:
    cands = _prepare(candidates, top)
    reqs, meta = [], []
    for qid, c in cands.items():
        for d, _ in c:
            reqs.append(GenRequest(GW.build_messages(queries[qid], [doc_text.get(d, "")], max_doc_chars),
                                   GW.TEMPLATE_VERSION, GW.validator(1), tag="rerank.pointwise"))
            meta.append((qid, d))
    gens = backend.generate(reqs) if reqs else []
    per_q: dict[str, dict] = {}
    scores: dict[str, dict[str, float]] = {q: {} for q in cands}
    status_counts = {"ok": 0, "bad_json": 0, "bad_tags": 0, "call_failed": 0}
    for (qid, d), g in zip(meta, gens, strict=True):
        parsed = GW.parse_output(g.text, 1) if g.text is not None else None
        ok = parsed is not None and parsed.status == "ok"
        status_counts["call_failed" if parsed is None else parsed.status] += 1
        _account(per_q, qid, g, not ok)
        scores[qid][d] = parsed.scores[0] / 10.0 if ok else 0.0
    run = []
    for qid, c in cands.items():
        per_q[qid]["rounds"] = 1
        run += _fuse(qid, c, scores[qid], alpha, system)
    return RerankResult(run, per_q, _summary(per_q, status_counts, "pointwise"))


def rerank_listwise(candidates, queries, doc_text, backend, *, window: int = 20, stride: int = 10, top: int = 100,
                    max_doc_chars: int = 3000, system: str = "listwise", **_) -> RerankResult:
    cands = _prepare(candidates, top)
    order = {q: [d for d, _ in c] for q, c in cands.items()}
    wins = {q: sliding_windows(len(o), window, stride) for q, o in order.items()}
    per_q: dict[str, dict] = {}
    status_counts = {"ok": 0, "unparsed": 0, "call_failed": 0}
    n_rounds = max((len(w) for w in wins.values()), default=0)
    for r in range(n_rounds):
        reqs, meta = [], []
        for qid, ws in wins.items():
            if r < len(ws):
                s, e = ws[r]
                docs = order[qid][s:e]
                reqs.append(GenRequest(LW.build_messages(queries[qid], [doc_text.get(d, "") for d in docs], max_doc_chars),
                                       LW.TEMPLATE_VERSION, LW.validator(len(docs)), tag="rerank.listwise"))
                meta.append((qid, s, e))
        gens = backend.generate(reqs)
        for (qid, s, e), g in zip(meta, gens, strict=True):
            perm = LW.parse_permutation(g.text, e - s)
            status_counts["call_failed" if g.text is None else ("ok" if perm else "unparsed")] += 1
            _account(per_q, qid, g, perm is None)
            per_q[qid]["rounds"] += 1
            if perm:
                win = order[qid][s:e]
                order[qid][s:e] = [win[i] for i in perm]
    run = []
    for qid, o in order.items():
        n = len(o)
        run += [{"query_id": qid, "doc_id": d, "score": (n - i + 1) / n, "rank": i, "system": system}
                for i, d in enumerate(o, 1)]
    return RerankResult(run, per_q, _summary(per_q, status_counts, "listwise"))


def _summary(per_q: dict, status_counts: dict, mode: str) -> dict:
    nq = max(1, len(per_q))
    tot = {k: sum(s[k] for s in per_q.values()) for k in ("calls", "prompt_tokens", "completion_tokens", "failed")}
    return {"mode": mode, "queries": len(per_q), **{f"total_{k}": v for k, v in tot.items()},
            **{f"{k}_per_query": v / nq for k, v in tot.items()},
            "sequential_rounds": max((s["rounds"] for s in per_q.values()), default=0),
            "answers": status_counts}


RERANKERS = {"groupwise": rerank_groupwise, "pointwise": rerank_pointwise, "listwise": rerank_listwise}


def rerank(mode: str, candidates, queries, doc_text, backend, **kw) -> RerankResult:
    if mode not in RERANKERS:
        raise ValueError(f"unknown rerank mode {mode!r} ({', '.join(RERANKERS)})")
    return RERANKERS[mode](candidates, queries, doc_text, backend, **kw)


def candidates_from_table(table) -> dict[str, list[tuple[str, float]]]:
    """RUNS (query_id, doc_id, score) or CANDIDATES (fused_score) table -> {qid: [(doc, score)]}."""
    cols = table.column_names
    score_col = "score" if "score" in cols else "fused_score"
    out: dict[str, list[tuple[str, float]]] = {}
    for q, d, s in zip(table["query_id"].to_pylist(), table["doc_id"].to_pylist(), table[score_col].to_pylist()):
        out.setdefault(q, []).append((d, float(s)))
    return out
