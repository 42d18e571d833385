"""Count the run configuration's knobs: `fields` (the fields of RunConfig and of each section,
nested models such as an endpoint or a judge counted as one field) and `settings` (every leaf,
recursively, a nested model's fields included). Prints JSON; `--out FILE` also writes it.

    PYTHONPATH=$PWD .venv/bin/python scripts/count_config_fields.py --out bench/results/config_fields.json
"""
from __future__ import annotations

import argparse
import json
import typing
from pathlib import Path

from pydantic import BaseModel


def _models(annotation) -> list[type[BaseModel]]:
    out = []
    for a in (annotation, *typing.get_args(annotation)):
        for b in (a, *typing.get_args(a)):
            if isinstance(b, type) and issubclass(b, BaseModel) and b not in out:
                out.append(b)
    return out


def leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf setting under `model`, dotted."""
    out: list[str] = []
    for name, f in model.model_fields.items():
        subs = _models(f.annotation)
        out += leaves(subs[0], f"{prefix}{name}.") if subs else [prefix + name]
    return out


def count() -> dict:
    from grouprank.config import RunConfig
    sections = {}
    fields = 0
    for name, f in RunConfig.model_fields.items():
        subs = _models(f.annotation)
        n = len(subs[0].model_fields) if subs else 1
        sections[name] = {"fields": n, "settings": len(leaves(subs[0])) if subs else 1}
        fields += n
    return {"fields": fields, "settings": len(leaves(RunConfig)), "sections": sections}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out")
    args = p.parse_args()
    res = count()
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
