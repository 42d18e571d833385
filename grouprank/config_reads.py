"""What a stage reads of the run configuration, recorded while it runs.

`recording(cfg)` returns a copy of the `RunConfig` (a subclass built on the fly, so `isinstance`,
`model_copy` and pydantic validation still work) that notes every top-level field read
(`cfg.judges`) and, for the sections given in `deep`, every field read inside them
(`cfg.judges.beta` -> "judges.beta"). The executor runs each stage on such a copy and refuses a
stage that read a field its `Stage.sections` does not put in its cache key: the key can then not
miss configuration the stage depends on. (Pydantic's serializer reads fields without attribute
access: a whole-section `model_dump()` is recorded as a read of the section, not of its fields.)
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

# the run's folder is in every key (outputs live there); reading it is always allowed
ALWAYS = frozenset({"work_dir"})


@lru_cache(maxsize=None)
def _recording_class(cls: type) -> type:
    fields = frozenset(cls.model_fields)

    def __getattribute__(self, name: str) -> Any:
        if name in fields:
            log = object.__getattribute__(self, "__pydantic_private__")
            if log is not None and "_reads" in log:
                log["_reads"].add(log["_prefix"] + name)
        return object.__getattribute__(self, name)

    def __reduce__(self):  # pickled (another process): a plain copy, which records nothing
        return _plain, (cls, dict(object.__getattribute__(self, "__dict__")),
                        set(object.__getattribute__(self, "__pydantic_fields_set__")))

    return type(f"Recording{cls.__name__}", (cls,), {"__getattribute__": __getattribute__,
                                                     "__reduce__": __reduce__, "__module__": __name__})


def _plain(cls: type, values: dict, fields_set: set) -> Any:
    return cls.model_construct(_fields_set=fields_set, **values)


class _Reads(set):
    """The record of reads; a deep copy of the configuration (`model_copy(deep=True)`) keeps recording
    into the same set."""

    def __deepcopy__(self, memo: dict) -> "_Reads":
        return self


def _wrap(model: Any, reads: set[str], prefix: str) -> Any:
    sub = _recording_class(type(model))
    out = sub.model_construct(_fields_set=set(model.model_fields_set), **dict(model.__dict__))
    # pydantic keeps private attributes in __pydantic_private__; these two never reach a dump
    object.__setattr__(out, "__pydantic_private__", {"_reads": reads, "_prefix": prefix})
    return out


def recording(cfg: Any, deep: tuple[str, ...] = ()) -> tuple[Any, set[str]]:
    """(a recording copy of `cfg`, the set it records into). `deep`: sections whose own fields are
    recorded too ("judges" -> "judges.beta")."""
    reads: set[str] = _Reads()
    view = _wrap(cfg, reads, "")
    for name in deep:
        object.__getattribute__(view, "__dict__")[name] = _wrap(getattr(cfg, name), reads, name + ".")
    reads.clear()
    return view, reads


def undeclared(reads: set[str], sections: tuple) -> list[str]:
    """The reads that `sections` (a Stage's declaration: "section" or ("section", (excluded
    fields...))) do not cover."""
    allowed: set[str] = set(ALWAYS)
    excluded: set[str] = set()
    for s in sections:
        name, exclude = (s, ()) if isinstance(s, str) else s
        allowed.add(name)
        excluded.update(f"{name}.{f}" for f in exclude)
    out = []
    for r in sorted(reads):
        top = r.split(".", 1)[0]
        if top not in allowed or r in excluded:
            out.append(r)
    return out


def only(section: str, model: type, *fields: str) -> tuple[str, tuple[str, ...]]:
    """A `Stage.sections` entry for a stage that reads just `fields` of a section:
    only("judges", JudgesConfig, "grade_scale") -> ("judges", (every other field...))."""
    unknown = set(fields) - set(model.model_fields)
    if unknown:
        raise ValueError(f"{section} has no field(s) {sorted(unknown)}")
    return section, tuple(f for f in model.model_fields if f not in fields)
