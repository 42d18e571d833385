"""Redaction by construction: what a configuration may hold, and what a published record shows.

Credentials come from environment variables (`LLMEndpoint.api_key_env`, HF_TOKEN, ...) or Prefect
Secret blocks (`api_key_secret`), never from the configuration itself, because the configuration is
published: the dataset card embeds it, Prefect stores it as the flow run's parameters, stage records
and Parquet metadata carry sections of it. So the configuration sections clean what they are given
at validation time, and no later writer has to remember to:

- `clean_url(url)`: a URL without user-info, query string or fragment (`https://u:p@h/v1?key=x` ->
  `https://h/v1`); the parts removed are reported by name only (`removed_url_parts`);
- `drop_secret_keys(d)`: a pass-through argument dict (`reranker.sft_args`, `grpo_args`, ...) without
  token / key / secret / password-like keys, at any depth (`is_secret_key`);
- `check_env_name(v)`: an environment variable *name*, refusing what looks like a key typed in its
  place (the message never repeats the value);
- `mask_config(data)`: the one pass every configuration goes through on load (`RunConfig` and
  every `Section` run it before validation): a key-shaped string anywhere (a key pasted into
  `model`, `name`, a prompt, a pass-through argument) becomes ``***`` and a value under a
  credential-like key (`api_key`, `token`, ... given where no such field exists) becomes
  ``<not shown>``, each logged by its path only. So the printed errors, the dataset card, Prefect's
  flow-run parameters, stage records, judgments metadata, reports and LLM cache keys and rows,
  which all come from the validated configuration, cannot hold such a value;
- `redact(obj)`: a defensive pass over anything about to be published (a JSON-able structure):
  secret-like keys show ``***``, URLs lose user-info and query, known key shapes inside strings are
  masked. The dataset card applies it to the run configuration it embeds.

Pydantic's validation errors never echo input values (`hide_input_in_errors` on every section).
"""
from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("grouprank.config")

MASK = "***"
HIDDEN = "<not shown>"  # what a refused credential is replaced with before validation reports it

# tokenizer vocabulary fields of TRL/transformers configs: names of special tokens, not credentials
_VOCAB_TOKENS = re.compile(r"^(pad|eos|bos|unk|sep|cls|mask|chat|special|additional_special)_tokens?$")
_SECRET_NAME = re.compile(
    r"(^|_|-)(token|api_?key|apikey|access_?key|private_?key|secret_?key|secret|secrets|password|passwd|pwd|"
    r"credential|credentials|auth|authorization|bearer|cookie|session_?key)$"
    r"|^(hf_token|hub_token|api-key|x-api-key)$")
# key shapes of common providers (OpenAI/Anthropic sk-, HF hf_, Groq gsk_, GitHub, Slack, AWS, Google)
KEY_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-[A-Za-z0-9_\-]{16,}|sk_[A-Za-z0-9_]{16,}|hf_[A-Za-z0-9]{20,}|gsk_[A-Za-z0-9]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9\-]{16,}|AKIA[A-Z0-9]{16}"
    r"|AIza[A-Za-z0-9_\-]{20,})")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def is_secret_key(name: Any) -> bool:
    """Whether a mapping key names a credential (hub_token, api_key, password, ...). Special-token
    fields of tokenizer configs (pad_token, eos_token) and counters (max_tokens) are not."""
    if not isinstance(name, str):
        return False
    n = name.strip().lower()
    if _VOCAB_TOKENS.match(n):
        return False
    return bool(_SECRET_NAME.search(n))


def removed_url_parts(url: str) -> list[str]:
    """Names of the credential-capable parts of a URL ('user-info', 'query', 'fragment')."""
    try:
        p = urlsplit(url)
    except ValueError:
        return []
    out = []
    if "@" in (p.netloc or ""):
        out.append("user-info")
    if p.query:
        out.append("query")
    if p.fragment:
        out.append("fragment")
    return out


def clean_url(url: str) -> str:
    """The URL without user-info, query string or fragment."""
    try:
        p = urlsplit(url)
    except ValueError:
        return MASK
    netloc = (p.netloc or "").rpartition("@")[2]
    return urlunsplit((p.scheme, netloc, p.path, "", ""))


def clean_url_field(url: str | None, where: str) -> str | None:
    """`clean_url` for a configuration field, with a warning naming the field and the parts removed
    (never their values). Whitespace around the URL is dropped."""
    if url is None:
        return None
    url = url.strip()
    parts = removed_url_parts(url)
    if not parts:
        return url
    log.warning("%s: removed the URL's %s (credentials come from api_key_env or a Prefect Secret block, "
                "never from the configuration, which is published)", where, " and ".join(parts))
    return clean_url(url)


def drop_secret_keys(d: Any, where: str = "") -> Any:
    """A copy of a pass-through argument structure without credential-like keys (at any depth);
    each one dropped is logged by its path, never its value."""
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            path = f"{where}.{k}" if where else str(k)
            if is_secret_key(k):
                log.warning("%s: dropped (a credential in the configuration would be published; set it in "
                            "the environment instead, e.g. HF_TOKEN)", path)
                continue
            out[k] = drop_secret_keys(v, path)
        return out
    if isinstance(d, list):
        return [drop_secret_keys(v, f"{where}[{i}]") for i, v in enumerate(d)]
    if isinstance(d, str):
        if KEY_SHAPES.search(d):
            log.warning("%s: a value shaped like an API key was masked", where or "value")
            return KEY_SHAPES.sub(MASK, d)
        if _URL.search(d):
            return _URL.sub(lambda m: clean_url(m.group(0)), d)
    return d


def looks_like_key(v: str) -> bool:
    """A string shaped like a credential rather than a name: a known provider prefix, or a long run
    of mixed-case letters and digits without separators."""
    if KEY_SHAPES.search(v):
        return True
    return (len(v) >= 20 and any(c.islower() for c in v) and any(c.isupper() for c in v)
            and any(c.isdigit() for c in v) and "_" not in v.strip("_"))


def check_env_name(v: str | None, field: str) -> str | None:
    """An environment variable name ("" or None: no key), or a ValueError that does not repeat the value."""
    if not v:
        return v
    if not _ENV_NAME.fullmatch(v) or looks_like_key(v):
        raise ValueError(f"{field} must be the name of an environment variable (letters, digits and _), "
                         "not the key itself; the value given is not shown. Put the key in that variable "
                         "(or a Prefect Secret block, api_key_secret)")
    return v


_BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9\-]{0,127}")


def check_block_name(v: str | None, field: str) -> str | None:
    """A Prefect block name (lowercase letters, digits, dashes), or a ValueError without the value."""
    if v is None:
        return None
    if not _BLOCK_NAME.fullmatch(v) or looks_like_key(v):
        raise ValueError(f"{field} must be the name of a Prefect Secret block (lowercase letters, digits "
                         "and -), not the key itself; the value given is not shown")
    return v


# fields that hold the *name* of a credential's source; their own validators refuse a key typed in
_NAME_FIELDS = frozenset({"api_key_env", "api_key_secret"})


def mask_config(data: Any, where: str = "", _fields: frozenset = frozenset()) -> Any:
    """`data` (a configuration dict as given, before validation) with key-shaped strings masked
    (``***``) and values under undeclared credential-like keys hidden (``<not shown>``), at any
    depth; each change logged by its path, never its value. `_fields`: the declared field names of
    the model at this level (a declared field such as `api_key_env` keeps its own validator)."""
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            path = f"{where}.{k}" if where else str(k)
            if is_secret_key(k) and k not in _fields and k not in _NAME_FIELDS and v not in (None, "", {}, []) and not (
                    isinstance(v, str) and v in (HIDDEN, MASK)):
                log.warning("%s: a credential in the configuration is not shown (keys come from api_key_env or "
                            "a Prefect Secret block, never from the configuration, which is published)", path)
                out[k] = HIDDEN
            else:
                out[k] = mask_config(v, path)
        return out
    if isinstance(data, (list, tuple)):
        return type(data)(mask_config(v, f"{where}.{i}" if where else str(i)) for i, v in enumerate(data))
    if isinstance(data, str) and KEY_SHAPES.search(data):
        log.warning("%s: a value shaped like an API key was masked (the configuration is published: cards, "
                    "Prefect parameters, reports, caches)", where or "value")
        return KEY_SHAPES.sub(MASK, data)
    return data


def redact(obj: Any) -> Any:
    """A copy of a JSON-able structure fit to publish: values under credential-like keys show
    ``***``, URLs lose user-info/query/fragment, key-shaped substrings are masked."""
    if isinstance(obj, dict):
        return {k: (MASK if is_secret_key(k) and v not in (None, "", {}, []) else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        s = KEY_SHAPES.sub(MASK, obj)
        if "://" in s:
            s = _URL.sub(lambda m: clean_url(m.group(0)), s)
        return s
    return obj
