"""Cache keys: the content address of a request (`request_hash`) and its effective sampling params.

The key is sha256 over (base_url, model, messages, sampling params, response_schema,
template_version). The API key, `tag`, `meta` and the validator are not part of it: the same prompt
to the same endpoint is the same answer. Every stored cache (`LLMCache`) is addressed by these
bytes, so the encoding below must never change (tests/test_llm_keys.py pins golden hashes):

    b"grouprank.llm.request/1"
    u64(len(header)) header                 canonical JSON of everything but the messages:
                                            {base_url (no trailing /; "managed:<model>"
                                             for a managed endpoint, "replicas:<name>"
                                             for an endpoint with replicas), model, sampling
                                             {temperature, top_p, max_tokens, seed},
                                             response_schema, template_version, and
                                             top_logprobs only when the request asks for
                                             them}, sorted keys,
                                            separators (",", ":"), UTF-8 (ensure_ascii off)
    u64(len(messages))
    per message: u64(len(message)), then per field in sorted key order
        u64(len(key)) key  b"s" u64(len(value)) value     a str value, UTF-8 (surrogatepass)
        u64(len(key)) key  b"j" u64(len(value)) value     any other value, canonical JSON
(u64 = 8-byte big-endian length.) Long prompt strings are hashed without a JSON escaping pass.

Speed (the cached path hashes every request before looking it up): the header bytes are memoised
per (endpoint, sampling, template, schema object), and the sha256 state after the header and a
first message made of strings only (the system prompt a template sends with every request) is
memoised too, so a request costs one state copy and the bytes of its remaining messages.
"""
from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

from .types import LLMRequest

_HASH_VERSION = b"grouprank.llm.request/1"
_u64 = struct.Struct(">Q").pack  # == int.to_bytes(8, "big") for 0 <= n < 2**64

# canonical header bytes per (endpoint, sampling, template, schema object). A response_schema is
# treated as immutable once used in a request (templates keep theirs as module constants).
_HEADER_CACHE: dict[tuple, tuple[Any, bytes]] = {}
# sha256 state after version + header + message count + first message, for first messages whose
# keys and values are all str (exact type: True == 1 would otherwise share an entry)
_PREFIX_CACHE: dict[tuple, "hashlib._Hash"] = {}
_KEY_BYTES: dict[str, bytes] = {}  # field name -> u64(len) + UTF-8 bytes
_CACHE_MAX = 1024


def _num(x: Any) -> Any:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x


def sampling_params(req: LLMRequest, endpoint) -> dict:
    """The effective sampling parameters of a request (request overrides > endpoint)."""
    return {
        "temperature": _num(endpoint.temperature if req.temperature is None else req.temperature),
        "top_p": _num(endpoint.top_p if req.top_p is None else req.top_p),
        "max_tokens": int(endpoint.max_tokens if req.max_tokens is None else req.max_tokens),
        "seed": req.seed,
    }


def endpoint_identity(endpoint) -> str:
    """The address part of a cache key: the base URL (no trailing /), ``managed:<model>`` for an
    endpoint grouprank serves itself (its port changes from run to run, its answers do not), or
    ``replicas:<endpoint name>`` for replicas of one model (which replica answered, or which
    replicas a rerun has, does not change the answer)."""
    managed = getattr(endpoint, "managed", None)
    if managed:
        return f"managed:{managed}"
    if getattr(endpoint, "replicas", None):
        return f"replicas:{endpoint.name}"
    return (endpoint.base_url or "").rstrip("/")


def _canon(v: Any) -> bytes:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def _header(req: LLMRequest, endpoint) -> bytes:
    t = endpoint.temperature if req.temperature is None else req.temperature
    p = endpoint.top_p if req.top_p is None else req.top_p
    mt = endpoint.max_tokens if req.max_tokens is None else req.max_tokens
    s, schema = req.seed, req.response_schema
    # memo key from the raw values and their types (True == 1 == 1.0 but they encode differently)
    managed = getattr(endpoint, "managed", None)
    lp = getattr(req, "top_logprobs", None)
    # whether the schema is sent as a constraint (a grammar changes the answer): part of the key
    js = getattr(endpoint, "json_schema", False) if schema is not None else False
    reps = endpoint.name if getattr(endpoint, "replicas", None) else None
    ck = (endpoint.base_url, managed, reps, endpoint.model, t, type(t), p, type(p), mt, type(mt), s, type(s),
          req.template_version, id(schema), lp, js)
    hit = _HEADER_CACHE.get(ck)
    if hit is not None and hit[0] is schema:
        return hit[1]
    head = {"base_url": endpoint_identity(endpoint), "model": endpoint.model,
            "sampling": sampling_params(req, endpoint), "response_schema": schema,
            "template_version": req.template_version}
    if lp:  # only when asked for: the keys of every other request keep their bytes
        head["top_logprobs"] = int(lp)
    if js:  # likewise: only a constrained request's key changes
        head["json_schema"] = js if isinstance(js, str) else "json_schema"
    hb = _canon(head)
    if len(_HEADER_CACHE) > _CACHE_MAX:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[ck] = (schema, hb)  # holds the schema: its id cannot be reused meanwhile
    return hb


def _key_bytes(k: Any) -> bytes:
    kb = _KEY_BYTES.get(k) if type(k) is str else None
    if kb is None:
        raw = str(k).encode("utf-8")
        kb = _u64(len(raw)) + raw
        if type(k) is str and len(_KEY_BYTES) < _CACHE_MAX:
            _KEY_BYTES[k] = kb
    return kb


_CONTENT_HEAD = _u64(2) + _u64(7) + b"content" + b"s"  # {"content": str, "role": str}, sorted
_ROLE_HEAD = _u64(4) + b"role" + b"s"


def _add_message(m: dict, add) -> None:
    if len(m) == 2:  # the usual {"role": str, "content": str}: the same bytes as the loop below
        c, r = m.get("content"), m.get("role")
        if type(c) is str and type(r) is str:
            cb, rb = c.encode("utf-8", "surrogatepass"), r.encode("utf-8", "surrogatepass")
            add(_CONTENT_HEAD + _u64(len(cb)))
            add(cb)
            add(_ROLE_HEAD + _u64(len(rb)) + rb)
            return
    add(_u64(len(m)))
    for k in sorted(m):
        v = m[k]
        add(_key_bytes(k))
        if isinstance(v, str):
            vb = v.encode("utf-8", "surrogatepass")
            add(b"s")
        else:
            vb = _canon(v)
            add(b"j")
        add(_u64(len(vb)))
        add(vb)


def request_hash(req: LLMRequest, endpoint) -> str:
    """sha256 hex digest over (base_url, model, messages, sampling params, response_schema,
    template_version); the encoding is described in the module docstring."""
    hb = _header(req, endpoint)
    msgs = req.messages
    n = len(msgs)
    parts: list[bytes] = []
    add = parts.append
    h = None
    if n > 1:
        first = msgs[0]
        items = tuple(first.items())
        for k, v in items:
            if type(k) is not str or type(v) is not str:
                break
        else:
            pk = (hb, n, items)
            st = _PREFIX_CACHE.get(pk)
            if st is None:
                pre: list[bytes] = [_HASH_VERSION, _u64(len(hb)), hb, _u64(n)]
                _add_message(first, pre.append)
                st = hashlib.sha256(b"".join(pre))
                if len(_PREFIX_CACHE) > _CACHE_MAX:
                    _PREFIX_CACHE.clear()
                _PREFIX_CACHE[pk] = st
            h = st.copy()
            msgs = msgs[1:]
    if h is None:
        parts += (_HASH_VERSION, _u64(len(hb)), hb, _u64(n))
    for m in msgs:
        _add_message(m, add)
    if h is None:
        return hashlib.sha256(b"".join(parts)).hexdigest()
    h.update(b"".join(parts))
    return h.hexdigest()
