"""Stage `fuse`: the judges' judgments fused into graded relevance labels (`judges.fusion`: the
paper's rank fusion, or the mean of calibrated scores)."""
from __future__ import annotations

import logging
from typing import Any

from data_schemas import JUDGMENTS, LABELS, QRELS
from grouprank.stage import Stage, StageContext, StageResult, TableOut, file, table

log = logging.getLogger("grouprank.judges")


def run(inputs: dict, cfg, ctx: StageContext) -> StageResult:
    from grouprank.errors import UserError
    from grouprank.judges.fusion import fuse_labels
    jc = cfg.judges
    if inputs.get("judgments") is None:
        raise UserError("fuse: no judgments (the judge stage ran as a dry run: set judges.dry_run=false)")
    weights = {s.id: s.weight for s in jc.judges}
    calib = None
    if jc.weights_from == "agreement" and inputs.get("qrels") is not None and len(jc.judges) > 1:
        from grouprank.judges.fusion import agreement_weights
        aw, calib = agreement_weights(inputs["judgments"], inputs["qrels"], jc.calibration_min_pairs)
        if aw is not None:
            weights = aw
            log.info("fuse: judge weights from agreement with human qrels on %d queries: %s",
                     calib["calibration_queries"], {j: round(x, 3) for j, x in aw.items()})
        else:
            log.info("fuse: configured judge weights (%s)", calib.get("fallback"))
    table_, rep = fuse_labels(inputs["judgments"], method=jc.fusion, weights=weights,
                              beta=jc.beta, grade_scale=jc.grade_scale, thresholds=jc.grade_thresholds,
                              rank_only_fractions=jc.rank_only_fractions)
    if table_.num_rows == 0:
        raise UserError(f"fuse: 0 labels from {inputs['judgments'].num_rows} judgment rows ({rep.pairs} pairs, "
                        f"{len(rep.unlabelled)} without a usable judgment): every judgment failed or none was "
                        "made; see the judge stage's judge_report.json")
    rd = rep.as_dict()
    rd["unlabelled_pairs"] = [list(x) for x in rep.unlabelled[:1000]]
    rd["calibration"] = calib
    rpath = ctx.write_json("fusion_report.json", rd, indent=1)
    stats: dict[str, Any] = {"pairs": rep.pairs, "labelled": rep.labelled, "unlabelled": len(rep.unlabelled),
                             "partially_judged": rep.partially_judged, "method": rep.method,
                             "rank_only_queries": rep.rank_only_queries}
    for g, n in sorted(rep.grade_counts.items()):
        stats[f"grade_{g}"] = n
    for j, w in rep.weights.items():
        stats[f"weight.{j}"] = round(w, 6)
    if calib is not None:
        stats["calibration_queries"] = calib["calibration_queries"]
        for j, info in calib["judges"].items():
            if info.get("spearman") is not None:
                stats[f"agreement.{j}"] = info["spearman"]
    return StageResult({"labels": TableOut(table_, {"fusion": rep.as_dict()}), "fusion_report": rpath}, stats)


def _cli_args(p) -> None:
    p.add_argument("--method", choices=["rank", "score_mean"], help="override judges.fusion")


STAGE = Stage(
    name="fuse", command="fuse-labels", title="fuse labels", run=run,
    help="fuse judgments into graded relevance labels",
    inputs=(table("judgments", JUDGMENTS, optional=True),
            table("qrels", QRELS, optional=True, doc="human labels: the calibration set of judges.weights_from=agreement")),
    outputs=(table("labels", LABELS), file("fusion_report", "fusion_report.json")),
    sections=("data", "judges"), timeout_s=7200,
    cli_args=_cli_args, cli_overrides=lambda a: {"judges.fusion": a.method} if a.method else {},
)
