"""Dry run (`estimate`): what a batch of requests would cost, before anything is sent."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

from .shared_cache import open_cache
from .keys import request_hash, sampling_params
from .types import LLMRequest
from .usage import cost


def _token_counter(tokenizer=None) -> tuple[Callable[[str], int], str]:
    if tokenizer is not None:
        if callable(tokenizer) and not hasattr(tokenizer, "encode"):
            return tokenizer, getattr(tokenizer, "__name__", "custom")
        return (lambda s: len(tokenizer.encode(s))), type(tokenizer).__name__
    try:
        import tiktoken
        enc = tiktoken.get_encoding("o200k_base")
        return (lambda s: len(enc.encode(s, disallowed_special=()))), "tiktoken:o200k_base"
    except Exception:  # noqa: BLE001 - not installed or no offline encoding file
        return (lambda s: (len(s) + 3) // 4), "chars/4"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def estimate(reqs: Sequence[LLMRequest], endpoint, tokenizer=None, *,
             cache_path: str | Path | None = None, cache_mode: str | None = None,
             completion_tokens_per_call: int | None = None) -> dict:
    """Dry run: nothing is sent. Counts calls and prompt tokens (tiktoken o200k_base when it is
    installed, else characters/4: the `tokenizer` field says which; or pass `tokenizer`, an object
    with .encode or a callable str -> int), and the cost at the endpoint's prices. Completion
    tokens are an upper bound (max_tokens per call) unless `completion_tokens_per_call` is given.
    With `cache_path` (and `cache_mode`, see `shared_cache.open_cache`), calls already answered in the
    cache are counted apart (they cost nothing)."""
    count, name = _token_counter(tokenizer)
    keys = [request_hash(r, endpoint) for r in reqs]
    cached: set[str] = set()
    p = Path(cache_path) if cache_path is not None else None
    # a per_writer folder not made yet may still have a single_file cache beside it (read too)
    if p is not None and (p.exists() or (cache_mode == "per_writer" and p.with_suffix(".sqlite").is_file())):
        c = open_cache(p, cache_mode)
        try:
            cached = set(c.get_many(keys))
        finally:
            c.close()
    seen: set[str] = set()
    calls = prompt_tokens = completion_tokens = 0
    per_tag: dict[str, dict] = defaultdict(lambda: {"calls": 0, "prompt_tokens": 0})
    for r, k in zip(reqs, keys):
        if k in cached or k in seen:
            continue
        seen.add(k)
        pt = 3 + sum(4 + count(_content_text(m.get("content"))) for m in r.messages)
        ct = (completion_tokens_per_call if completion_tokens_per_call is not None
              else sampling_params(r, endpoint)["max_tokens"])
        calls += 1
        prompt_tokens += pt
        completion_tokens += ct
        per_tag[r.tag]["calls"] += 1
        per_tag[r.tag]["prompt_tokens"] += pt
    return {
        "requests": len(reqs),
        "calls": calls,
        "cached": sum(1 for k in set(keys) if k in cached),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "completion_tokens_is_upper_bound": completion_tokens_per_call is None,
        "est_cost_usd": round(cost(prompt_tokens, completion_tokens, endpoint), 6),
        # a cost of 0 means nothing when the endpoint has no prices
        "prices_set": bool(float(endpoint.price_prompt_per_mtok) or float(endpoint.price_completion_per_mtok)),
        "tokenizer": name,
        "endpoint": endpoint.name,
        "model": endpoint.model,
        "per_tag": dict(per_tag),
    }
