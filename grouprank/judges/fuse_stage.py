"""Stage `fuse`: the judges' judgments fused into graded relevance labels (`judges.fusion`: the
paper's rank fusion, or the mean of calibrated scores)."""
from __future__ import annotations

from typing import Any

from data_schemas import JUDGMENTS, LABELS
from grouprank.stage import Stage, StageContext, StageResult, TableOut, file, table


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    from grouprank.errors import UserError
    from grouprank.judges.fusion import fuse_labels
    jc = cfg.judges
    if inputs.get("judgments") is None:
        raise UserError("fuse: no judgments (the judge stage ran as a dry run: set judges.dry_run=false)")
    table_, rep = fuse_labels(inputs["judgments"], method=jc.fusion, weights={s.id: s.weight for s in jc.judges},
                              beta=jc.beta, grade_scale=jc.grade_scale, thresholds=jc.grade_thresholds,
                              rank_only_fractions=jc.rank_only_fractions, return_report=True)
    rd = rep.as_dict()
    rd["unlabelled_pairs"] = [list(x) for x in rep.unlabelled[:1000]]
    rpath = ctx.write_json("fusion_report.json", rd, indent=1)
    stats: dict[str, Any] = {"pairs": rep.pairs, "labelled": rep.labelled, "unlabelled": len(rep.unlabelled),
                             "partially_judged": rep.partially_judged, "method": rep.method,
                             "rank_only_queries": rep.rank_only_queries}
    for g, n in sorted(rep.grade_counts.items()):
        stats[f"grade_{g}"] = n
    for j, w in rep.weights.items():
        stats[f"weight.{j}"] = round(w, 6)
    return StageResult({"labels": TableOut(table_, {"fusion": rep.as_dict()}), "fusion_report": rpath}, stats)


def _cli_args(p) -> None:
    p.add_argument("--method", choices=["rank", "score_mean"], help="override judges.fusion")


STAGE = Stage(
    name="fuse", command="fuse-labels", title="fuse labels", run=run,
    help="fuse judgments into graded relevance labels",
    inputs=(table("judgments", JUDGMENTS, optional=True),),
    outputs=(table("labels", LABELS), file("fusion_report", "fusion_report.json")),
    sections=("data", "judges"), timeout_s=7200,
    cli_args=_cli_args, cli_overrides=lambda a: {"judges.fusion": a.method} if a.method else {},
)
