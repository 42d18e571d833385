"""`grouprank train-retriever`: contrastive fine-tuning of a dense retriever on retriever examples.

Inputs default to the stage outputs under the work dir (the first file that exists of the listed
paths); pass paths to override. With the collection's qrels (load stage) the model is evaluated
before and after training on the `retriever.eval_split` queries (default test) over the whole
corpus; without them a share of the example queries is held out (`retriever.holdout_fraction`).

Examples:
  grouprank train-retriever --work-dir runs/scifact
  grouprank train-retriever --examples runs/scifact/export/retriever --set retriever.loss=cached_mnrl \\
      --set retriever.batch_size=256 --set retriever.remine_rounds=1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULTS: dict[str, tuple[str, ...]] = {
    "retriever_examples": ("build_datasets/retriever_examples.parquet", "export/retriever"),
    "documents": ("collection/documents.parquet", "documents.parquet"),
    "queries": ("collection/queries.parquet",),
    "qrels": ("collection/qrels.parquet",),
    "labels": ("fuse/labels.parquet", "judge/labels.parquet", "labels.parquet"),
}
HELP = {
    "retriever_examples": "RETRIEVER_EXAMPLES table or the exported anchor/positive/negative_1..n view "
                          "(file or folder of shards)",
    "documents": "DOCUMENTS (corpus for evaluation and re-mining)",
    "queries": "QUERIES with the evaluation split (collection queries)",
    "qrels": "QRELS with the evaluation split (collection qrels)",
    "labels": "LABELS (false-negative guard when re-mining)",
}


def register(subparsers) -> None:
    from grouprank.cli import add_config_args
    p = subparsers.add_parser("train-retriever", help="fine-tune a dense retriever (sentence-transformers, MNRL)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    for name, cands in DEFAULTS.items():
        flag = "--examples" if name == "retriever_examples" else f"--{name}"
        p.add_argument(flag, dest=name, metavar="PATH",
                       help=f"{HELP[name]} (default: first existing of "
                            + ", ".join(f"<work_dir>/{c}" for c in cands) + ")")
        if name != "retriever_examples":
            p.add_argument(f"--no-{name}", dest=f"no_{name}", action="store_true",
                           help=f"do not use a {name} table even if one exists")
    p.add_argument("--output-dir", metavar="DIR", help="default <work_dir>/train_retriever")
    p.add_argument("--source", default="synthetic", help="name of the data source in the model card "
                   "(e.g. synthetic, human)")
    p.set_defaults(func=_handler)


def resolve_inputs(args, work: Path) -> dict[str, str]:
    from grouprank.errors import UserError
    inputs: dict[str, str] = {}
    for name, cands in DEFAULTS.items():
        if getattr(args, f"no_{name}", False):
            continue
        given = getattr(args, name, None)
        if given:
            if not Path(given).exists():
                raise UserError(f"--{name.replace('_', '-')}: {given} does not exist")
            inputs[name] = given
            continue
        for c in cands:
            if (work / c).exists():
                inputs[name] = str(work / c)
                break
    if "retriever_examples" not in inputs:
        raise UserError("no retriever examples: pass --examples PATH or run build-datasets first "
                        f"(looked for {', '.join(str(work / c) for c in DEFAULTS['retriever_examples'])})")
    return inputs


def _handler(args) -> int:
    import logging
    from grouprank.cli import config_from_args
    from .stage import run
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    inputs = resolve_inputs(args, cfg.work_path)
    res = run(cfg, **inputs, output_dir=args.output_dir, data_source=args.source)
    print(json.dumps(res, indent=2, default=str))
    return 0
