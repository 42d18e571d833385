"""The 0–10 relevance scale, written once (GroupRank, arXiv 2511.11653: usefulness/helpfulness first, relevance
second, anchors from 9–10 "extremely helpful" to 0 "not helpful").

The pointwise and groupwise system prompts quote `CRITERIA` and `SCALE` verbatim; every score
parser bounds scores by `SCORE_MIN`..`SCORE_MAX`. Editing the text changes every prompt that
quotes it: bump those modules' `TEMPLATE_VERSION` (LLM cache keys and exported SFT prompts).
"""
from __future__ import annotations

SCORE_MIN, SCORE_MAX = 0, 10

CRITERIA = (
    "Score first by usefulness: how helpful the document is for answering the query or satisfying "
    "the information need behind it; then by relevance: how closely it matches the topic of the query.\n"
)

SCALE = (
    "Scale:\n"
    "9-10: extremely helpful; directly and completely answers the query.\n"
    "7-8: very helpful; answers most of the query or gives key information for it.\n"
    "5-6: somewhat helpful; partially answers the query or gives useful related information.\n"
    "3-4: marginally helpful; on the topic of the query but does not answer it.\n"
    "1-2: barely related; shares some terms with the query but is of almost no help.\n"
    "0: not helpful; unrelated to the query.\n"
)
