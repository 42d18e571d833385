"""The base of every configuration section: unknown keys and wrong types are rejected on load and on
assignment. Sections live in the package that uses them (`<package>/config.py`); `grouprank.config`
composes them into the run's `RunConfig`."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _mask_key_shapes(cls, data):
        """No key-shaped value survives loading (grouprank.redact.mask_config), however the
        section is built."""
        if not isinstance(data, dict):
            return data
        from grouprank.redact import mask_config
        return mask_config(data, "", frozenset(cls.model_fields))


def refuse_moved(data, moved: dict[str, str], section: str):
    """A key that moved to another place (`moved`: old key -> new dotted key) is an error naming
    the new key, not a silently ignored or half-applied setting."""
    if isinstance(data, dict):
        for old, new in moved.items():
            if old in data:
                raise ValueError(f"{section}.{old} was replaced by {new}: set {new} instead")
    return data


def _model_at(model, loc) -> type | None:
    """The pydantic model class that holds the field at `loc` (None when it cannot be followed)."""
    import typing
    cur = model
    for part in loc:
        if isinstance(part, int) or cur is None:
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return cur if part == loc[-1] else None
        if part == loc[-1]:
            return cur
        ann = fields[part].annotation
        nxt = None
        for a in (ann, *typing.get_args(ann)):
            for b in (a, *typing.get_args(a)):
                if isinstance(b, type) and issubclass(b, BaseModel):
                    nxt = b
        cur = nxt
    return cur


def describe_validation_error(e, model=None) -> str:
    """A pydantic ValidationError as one line per problem: the key, the value given and what is
    allowed (the literal's values, the section's keys for an unknown key, the expected type)."""
    out = []
    for er in e.errors():
        loc = tuple(er.get("loc", ()))
        key = ".".join(str(p) for p in loc)
        from grouprank.redact import redact
        given = redact(er.get("input"))
        typ = er.get("type", "")
        if typ == "extra_forbidden":
            holder = _model_at(model, loc) if model is not None else None
            allowed = sorted(holder.model_fields) if holder is not None and hasattr(holder, "model_fields") else []
            msg = f"unknown key {key!r}" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
        elif typ == "literal_error":
            msg = f"{key} = {given!r} is not allowed; allowed values: {er.get('ctx', {}).get('expected', '?')}"
        elif isinstance(er.get("input"), dict):  # a whole section refused (e.g. a moved key): the reason suffices
            msg = str(er.get("msg", "invalid section")).removeprefix("Value error, ")
        else:
            msg = f"{key} = {given!r}: {er.get('msg', 'invalid value')}"
        out.append(msg)
    return "; ".join(out) if len(out) <= 3 else "; ".join(out[:3]) + f" (and {len(out) - 3} more)"
