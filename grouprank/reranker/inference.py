"""Reranking with an LLM: the scoring modes of `grouprank.scoring` (groupwise = GroupRank,
pointwise, listwise with sliding windows), the same objects the judges drive: the same prompts,
the same groups for the same seed, the same reading of answers and the same failure policy
(`grouprank.scoring.call`: salvage what parses). This module only sends the calls through a
backend and turns scores into a run. Document texts: the caller passes {doc_id: text}, built with
`grouprank.text.document_text_map(documents)` so the reranker sees the string the judges and the
retrievers see.

Groupwise (the authors' inference code): for each query take the top-N first-stage candidates
  (N = `top`, default 100); per pass the mode's seeded groups of near-equal size; every group of
  every query and pass in one backend batch (one sequential round); a document's group score is
  its 0–10 score / 10 averaged over the passes (test-time scaling). A document its group's answer
  did not score validly (call failed, tags broken, its entry invalid) counts `FALLBACK_SCORE` (0)
  for that pass; it never raises.
  Final score = alpha · group + (1 − alpha) · minmax(first-stage score within the query)
  (alpha = 0.6); ties broken by first-stage rank.

Pointwise: the pointwise prompt, one call per document (N calls per query, one round);
  fallback 0; same fusion with alpha.

Listwise (RankGPT): windows of `window` documents moving from the bottom of the first-stage list
  to the top by `stride`, driven by `grouprank.scoring.listwise.ListwiseRun`; each window is
  reordered by the labels the answer placed, the others keep their relative order after them (an
  unreadable answer leaves the window unchanged). Windows of one query are sequential; queries
  run in parallel round by round. The final ranking is the permutation (score = (N − rank + 1) / N);
  alpha does not apply.

Backends: `LLMBackend` (the project's `grouprank.llm.LLMClient`: concurrency, retries, cache,
token accounting), `TransformersBackend` (an in-process causal LM, e.g. the trained reranker),
`FunctionBackend` (a Python callable; tests).

Every call is accounted: per query `calls`, `rounds`, `prompt_tokens`, `completion_tokens`,
`failed` (calls whose answer was not fully valid: some document got the fallback); `answers`
counts the answers' statuses (the mode's: ok, bad_json, bad_tags, partial, unparsed, call_failed).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from grouprank.first_stage.fusion import minmax
from grouprank.scoring.call import FALLBACK_SCORE, Call
from grouprank.scoring.groupwise import GroupwiseMode
from grouprank.scoring.listwise import ListwiseMode
from grouprank.scoring.pointwise import PointwiseMode

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
            # the text also when validation failed: the scoring mode salvages what parses
            out.append(Generation(res.text, int(res.prompt_tokens or 0),
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


# --------------------------------------------------------------------------- reranking

@dataclass
class RerankResult:
    run: list[dict]                                  # query_id, doc_id, score, rank, system
    per_query: dict[str, dict] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


class _Tally:
    """Per-query accounting (calls, rounds, tokens, failed = answers not fully valid) and the
    answers' statuses."""

    def __init__(self, qids):
        self.per_q = {q: {"calls": 0, "rounds": 0, "prompt_tokens": 0, "completion_tokens": 0, "failed": 0}
                      for q in qids}
        self.answers: dict[str, int] = {}

    def add(self, qid: str, g: Generation, scored) -> None:
        s = self.per_q[qid]
        s["calls"] += 1
        s["prompt_tokens"] += g.prompt_tokens
        s["completion_tokens"] += g.completion_tokens
        s["failed"] += int(not scored.ok)
        self.answers[scored.status] = self.answers.get(scored.status, 0) + 1

    def summary(self, mode: str) -> dict:
        per_q = self.per_q
        nq = max(1, len(per_q))
        tot = {k: sum(s[k] for s in per_q.values()) for k in ("calls", "prompt_tokens", "completion_tokens", "failed")}
        return {"mode": mode, "queries": len(per_q), **{f"total_{k}": v for k, v in tot.items()},
                **{f"{k}_per_query": v / nq for k, v in tot.items()},
                "sequential_rounds": max((s["rounds"] for s in per_q.values()), default=0),
                "answers": dict(sorted(self.answers.items()))}


def _fuse(qid: str, cands: list[tuple[str, float]], model_score: dict[str, float], alpha: float,
          system: str) -> list[dict]:
    first = minmax([s for _, s in cands])
    rows = [(d, alpha * model_score.get(d, 0.0) + (1 - alpha) * f, r) for r, ((d, _), f) in enumerate(zip(cands, first))]
    rows.sort(key=lambda x: (-x[1], x[2]))
    return [{"query_id": qid, "doc_id": d, "score": float(s), "rank": i, "system": system}
            for i, (d, s, _) in enumerate(rows, 1)]


def _prepare(candidates: dict[str, list[tuple[str, float]]], top: int, doc_text: dict[str, str]):
    """-> ({qid: top candidates by first-stage score}, {qid: their ids}, {doc_id: text, "" if unknown})."""
    cands = {}
    for qid, c in candidates.items():
        c = sorted(c, key=lambda x: -x[1])[:top]
        if c:
            cands[qid] = c
    pools = {q: [d for d, _ in c] for q, c in cands.items()}
    return cands, pools, {d: doc_text.get(d, "") for ds in pools.values() for d in ds}


def _requests(calls: list[Call], template_version: str, tag: str) -> list[GenRequest]:
    return [GenRequest(c.messages, template_version, c.validate, tag=tag) for c in calls]


def _rerank_scored(mode, candidates, queries, doc_text, backend, *, alpha: float, top: int, system: str,
                   passes: int = 1) -> RerankResult:
    """Pointwise and groupwise: every call in one backend batch (one round); a document's model
    score is its 0–10 score / 10 averaged over the passes, `FALLBACK_SCORE` where an answer gave it
    none; final = alpha · model + (1 − alpha) · minmax(first stage), ties by first-stage rank."""
    cands, pools, texts = _prepare(candidates, top, doc_text)
    calls = mode.plan(pools, queries, texts)
    gens = backend.generate(_requests(calls, mode.template_version, f"rerank.{mode.kind}")) if calls else []
    tally = _Tally(cands)
    sums: dict[str, dict[str, float]] = {q: {} for q in cands}
    for call, g in zip(calls, gens, strict=True):
        scored = mode.parse(g.text, len(call.doc_ids))
        tally.add(call.query_id, g, scored)
        for d, v in zip(call.doc_ids, scored.scores):
            sums[call.query_id][d] = sums[call.query_id].get(d, 0.0) + (FALLBACK_SCORE if v is None else v / 10.0)
    run = []
    for qid, c in cands.items():
        tally.per_q[qid]["rounds"] = 1
        run += _fuse(qid, c, {d: v / passes for d, v in sums[qid].items()}, alpha, system)
    return RerankResult(run, tally.per_q, tally.summary(mode.kind))


def rerank_groupwise(candidates, queries: dict[str, str], doc_text: dict[str, str], backend, *,
                     group_size: int = 20, passes: int = 1, alpha: float = 0.6, top: int = 100, seed: int = 13,
                     max_doc_chars: int = 3000, system: str = "groupwise", **_) -> RerankResult:
    mode = GroupwiseMode(group_size=group_size, passes=passes, seed=seed, max_doc_chars=max_doc_chars)
    return _rerank_scored(mode, candidates, queries, doc_text, backend, alpha=alpha, top=top, system=system,
                          passes=passes)


def rerank_pointwise(candidates, queries, doc_text, backend, *, alpha: float = 0.6, top: int = 100,
                     max_doc_chars: int = 3000, system: str = "pointwise", **_) -> RerankResult:
    return _rerank_scored(PointwiseMode(max_doc_chars=max_doc_chars), candidates, queries, doc_text, backend,
                          alpha=alpha, top=top, system=system)


def rerank_listwise(candidates, queries, doc_text, backend, *, window: int = 20, stride: int = 10, top: int = 100,
                    max_doc_chars: int = 3000, system: str = "listwise", **_) -> RerankResult:
    """Sliding windows over the first-stage order (no context budget: always windows); the final
    ranking is the permutation, score = (N − rank + 1) / N; alpha does not apply."""
    mode = ListwiseMode(window=window, stride=stride, max_doc_chars=max_doc_chars)
    cands, pools, texts = _prepare(candidates, top, doc_text)
    run_ = mode.start(pools, queries, texts)
    tally = _Tally(cands)
    for calls in run_.steps():
        gens = backend.generate(_requests(calls, mode.template_version, "rerank.listwise"))
        for call, g in zip(calls, gens, strict=True):
            scored, _, _ = run_.apply(call, g.text)
            tally.add(call.query_id, g, scored)
            tally.per_q[call.query_id]["rounds"] += 1
    run = []
    for qid, o in run_.order.items():
        n = len(o)
        run += [{"query_id": qid, "doc_id": d, "score": (n - i + 1) / n, "rank": i, "system": system}
                for i, d in enumerate(o, 1)]
    return RerankResult(run, tally.per_q, tally.summary("listwise"))


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


def transformers_backend(rc, model_path, *, greedy: bool = False, max_new_tokens: int | None = None) -> TransformersBackend:
    """The in-process reranker at `model_path` (a trained checkpoint, or what `reranker.base_model`
    takes) with the inference settings of `rc` (the `rerank` section): the one place it is built
    (evaluation, `grouprank rerank`, train_reranker's held-out check, which decodes greedily)."""
    return TransformersBackend.from_path(str(model_path), max_new_tokens=max_new_tokens or rc.max_tokens,
                                         temperature=None if greedy else rc.temperature,
                                         top_p=None if greedy else rc.top_p,
                                         batch_size=rc.batch_size, dtype=rc.dtype)


def llm_backend(cfg, rc, *, stage: str, endpoint=None) -> LLMBackend:
    """Reranking through the run's LLM client (`grouprank.llm.from_config`: `rc.endpoint`, else the
    first configured; or `endpoint` given outright) with the inference settings of `rc`."""
    from grouprank.llm.from_config import llm_client
    client = llm_client(cfg, rc.endpoint, who="reranking through an LLM endpoint", stage=stage, endpoint=endpoint)
    return LLMBackend(client, temperature=rc.temperature, top_p=rc.top_p, max_tokens=rc.max_tokens)
