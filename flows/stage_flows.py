"""One Prefect flow per pipeline stage, generated from the stage list (`grouprank.stage_list`).

`<command>_flow` (e.g. `judge_flow`, `fuse_labels_flow`, `train_retriever_flow`) runs that stage and
the stages it needs; each needed stage comes from the cache when nothing it depends on changed.
Deployment entrypoints: `flows/stage_flows.py:<command>_flow` (see prefect.yaml).
"""
from __future__ import annotations

from grouprank.stage_list import all_stages

from flows.dag import stage_flow

FLOWS = {}
for _st in all_stages().values():
    FLOWS[_st.cli_name] = globals()[_st.cli_name.replace("-", "_") + "_flow"] = stage_flow(_st, __name__)
