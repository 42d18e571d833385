"""Every table the pipeline stages exchange: one definition each (see base.Table).

Grade convention everywhere: integer grades, higher = more relevant, 0 = not relevant.
Original labels are kept verbatim in `qrels.original_label` so no information is lost.
"""
from __future__ import annotations

import pyarrow as pa

from .base import Field, Table, finite, in_range, non_empty, one_of

S, I, F, B = pa.string(), pa.int64(), pa.float64(), pa.bool_()
MSG = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

DOCUMENTS = Table(
    "documents", 1,
    (
        Field("doc_id", S, doc="document id, unique within the collection", checks=(non_empty,)),
        Field("title", S, nullable=True, doc="title, if the source has one"),
        Field("text", S, doc="document body", checks=(non_empty,)),
        Field("collection", S, doc="collection name (e.g. scifact)"),
    ),
    doc="The corpus.",
    key=("doc_id",),
)

QUERIES = Table(
    "queries", 2,  # v2: decision "generation_failed"
    (
        Field("query_id", S, checks=(non_empty,)),
        Field("text", S, checks=(non_empty,)),
        Field("collection", S),
        Field("split", S, doc="train / dev / test / generated / ..."),
        Field("source", S, doc="where the query came from",
              checks=(one_of("existing", "generated"),)),
        Field("source_doc_id", S, nullable=True, doc="document a generated query was written from"),
        Field("generator_model", S, nullable=True, doc="LLM that generated the query"),
        Field("template_version", S, nullable=True, doc="prompt template id@version used"),
        Field("query_type", S, nullable=True, doc="keyword / question / reasoning (generated queries)"),
        Field("roundtrip_rank", I, nullable=True,
              doc="rank of source_doc_id under the hybrid retriever (generated queries); null if not in the top k searched"),
        Field("decision", S, doc="kept or why dropped (generation_failed: the endpoint never answered; "
              "parse_error: it answered, but no usable query could be parsed)",
              checks=(one_of("kept", "duplicate", "near_duplicate", "leakage", "roundtrip", "parse_error",
                             "generation_failed"),)),
        Field("decision_detail", S, nullable=True, doc="e.g. the eval query it leaks, the query it merged into, cosine"),
    ),
    doc="Queries with provenance and filter decisions (dropped queries are kept with their reason).",
    key=("query_id",),
)

QRELS = Table(
    "qrels", 1,
    (
        Field("query_id", S, doc="query id (queries.jsonl `_id`)", checks=(non_empty,)),
        Field("doc_id", S, doc="document id (corpus.jsonl `_id`)", checks=(non_empty,)),
        Field("grade", I, doc="graded relevance, higher = more relevant, 0 = not relevant"),
        Field("original_label", S, doc="the label exactly as the source gave it (synthesized qrels: the grade)"),
        Field("split", S, doc="query split the judgment belongs to (synthesized qrels: train)"),
        Field("source", S, doc="human (the collection's qrels) or synthetic (fused LLM/local judges)",
              checks=(one_of("human", "synthetic"),)),
    ),
    doc="Graded relevance judgments (human or synthesized).",
    key=("query_id", "doc_id", "split"),
)

CANDIDATES = Table(
    "candidates", 1,
    (
        Field("query_id", S),
        Field("doc_id", S),
        Field("rank", I, doc="1-based rank in the fused ranking", checks=(in_range(1),)),
        Field("fused_score", F, checks=(finite,)),
        Field("bm25_score", F, nullable=True, checks=(finite,)),
        Field("bm25_rank", I, nullable=True, doc="null if BM25 did not retrieve the document"),
        Field("dense_score", F, nullable=True, checks=(finite,)),
        Field("dense_rank", I, nullable=True),
        Field("fusion", S, doc="minmax / rrf / bm25 / dense"),
        Field("pool", S, doc="why it is in the pool", checks=(one_of("top", "sampled", "all"),)),
    ),
    doc="Candidate pools per query from BM25, dense and their fusion, with provenance.",
    key=("query_id", "doc_id"),
)

RANKING = Table(
    "ranking", 1,
    tuple(f for f in CANDIDATES.fields if f.name != "pool"),
    doc="A fused first-stage ranking (in memory: every candidate, before pooling).",
    key=("query_id", "doc_id"),
)

JUDGMENTS = Table(
    "judgments", 1,
    (
        Field("query_id", S),
        Field("doc_id", S),
        Field("judge_id", S, doc="name of the judge configuration (model + kind + template)"),
        Field("kind", S, checks=(one_of("pointwise", "listwise", "groupwise", "local"),)),
        Field("model", S, doc="model name or local scorer id"),
        Field("template_version", S),
        Field("pass_index", I, doc="shuffle pass for groupwise; 0 otherwise"),
        Field("group_id", S, nullable=True, doc="group or window the pair was judged in"),
        Field("score", F, nullable=True, doc="raw 0-10 score (pointwise/groupwise/local)", checks=(finite,)),
        Field("rank", I, nullable=True, doc="raw rank (listwise)"),
        Field("rationale", S, nullable=True),
        Field("request_hash", S, doc="content hash of the LLM request (cache key)"),
        Field("status", S, checks=(one_of("ok", "failed", "skipped"),),
              doc="skipped: an active-labelling judge was not asked about the pair (error says why)"),
        Field("error", S, nullable=True, doc="why it failed or was skipped"),
        Field("injection_flag", B, doc="document text contains instructions aimed at the judge"),
        Field("prompt_tokens", I, nullable=True),
        Field("completion_tokens", I, nullable=True),
    ),
    doc="Every judge's raw output per (query, document, judge, pass).",
    key=("query_id", "doc_id", "judge_id", "pass_index"),
)

LABELS = Table(
    "labels", 1,
    (
        Field("query_id", S, doc="query id"),
        Field("doc_id", S, doc="document id"),
        Field("grade", I, doc="fused graded relevance (default scale 0-3), higher = more relevant"),
        Field("fused_score", F, doc="the judges' fused score (higher = more relevant; its scale depends on "
              "`method`), from which the grade is cut", checks=(finite,)),
        Field("fused_rank", I, doc="1-based rank of the document among the query's labelled documents by "
              "fused_score", checks=(in_range(1),)),
        Field("method", S, doc="how the judges were fused: rank_fusion / score_mean / single"),
        Field("n_judges", I, doc="judges that gave the pair a value"),
        Field("judge_scores", S, doc="JSON object (a string: judge ids vary per run, so no fixed struct) "
              "mapping judge_id to that judge's raw value: a 0-10 score (pointwise, groupwise, local) or a "
              "rank (listwise, 1 = best), null when the judge failed or skipped the pair; read with "
              "`json.loads`"),
    ),
    doc="Graded relevance fused from the judges.",
    key=("query_id", "doc_id"),
)

RERANKER_RL = Table(
    "reranker_rl_examples", 1,
    (
        Field("example_id", S, doc="unique example id, `<query_id>#g<k>`: the query's k-th sampled group"),
        Field("query_id", S, doc="the query the group was sampled for"),
        Field("prompt", pa.list_(MSG), doc="chat messages in the GroupRank format (TRL conversational prompt): "
              "system instructions, then the query with documents [1]..[c]"),
        Field("doc_ids", pa.list_(S), doc="document ids in prompt order [1]..[c]"),
        Field("gold_grades", pa.list_(I), doc="gold (fused) grade per document, prompt order"),
        Field("gold_scores", pa.list_(F), doc="gold fused score per document, prompt order"),
        Field("group_size", I, doc="documents in the group (c)", checks=(in_range(1),)),
    ),
    doc="Groupwise RL examples for TRL GRPOTrainer (prompt + gold columns for the reward).",
    key=("example_id",),
)

RERANKER_SFT = Table(
    "reranker_sft_examples", 2,
    (
        Field("example_id", S, doc="unique example id: `<query_id>#g<k>` (the RL view's group k, fused-label "
              "targets) or `<query_id>#<judge_id>#p<pass>#<group>` (a groupwise judge's own group)"),
        Field("query_id", S, doc="the query the group was sampled for"),
        Field("messages", pa.list_(MSG), doc="system + user + assistant target in the GroupRank format"),
        Field("doc_ids", pa.list_(S), doc="document ids in prompt order [1]..[c]"),
        Field("gold_grades", pa.list_(I), doc="gold (fused) grade per document, prompt order"),
        Field("group_size", I, doc="documents in the group (c)", checks=(in_range(1),)),
        Field("target_source", S, doc="teacher:<judge_id> (the groupwise judge's rationale and scores), "
              "teacher_scores:<judge_id> (its scores, templated rationale) or fused_labels "
              "(scores from fused grades, templated rationale)"),
    ),
    doc="Groupwise SFT examples for TRL SFTTrainer.",
    key=("example_id",),
)

RETRIEVER_EXAMPLES = Table(
    "retriever_examples", 1,
    (
        Field("query_id", S, doc="query id"),
        Field("anchor", S, doc="the query text", checks=(non_empty,)),
        Field("positive_doc_id", S, doc="id of the positive document"),
        Field("positive", S, doc="text of the positive document (grade >= the positive grade)", checks=(non_empty,)),
        Field("positive_grade", I, doc="the positive's fused grade"),
        Field("negative_doc_ids", pa.list_(S), doc="ids of the hard negatives, in retrieval order"),
        Field("negatives", pa.list_(S), doc="texts of the hard negatives (guarded against false negatives), "
              "same order"),
        Field("negative_grades", pa.list_(I), doc="fused grade of each hard negative, same order"),
    ),
    doc="Contrastive triplets; exported for sentence-transformers as anchor/positive/negative_1..n.",
    key=("query_id", "positive_doc_id"),
)

ADAPTATION_EXAMPLES = Table(
    "adaptation_examples", 1,
    (
        Field("query_id", S, doc="pseudo-query id: pq<view>-<doc_id>"),
        Field("kind", S, doc="how the pseudo-query was made from its document (llm: generated by an LLM)",
              checks=(one_of("title", "lead", "sentence", "span", "llm"),)),
        Field("anchor", S, doc="the pseudo-query", checks=(non_empty,)),
        Field("positive_doc_id", S, doc="the document the query came from"),
        Field("positive", S, doc="that document without the query's span (the query is never found by its "
              "copy); for kind llm the whole document", checks=(non_empty,)),
        Field("negative_doc_id", S, doc="a document the teacher ranks in adaptation.neg_ranks"),
        Field("negative_1", S, doc="its text", checks=(non_empty,)),
        Field("teacher_margin", F, doc="the teacher's combined standard score, positive minus negative, times "
              "adaptation.margin_scale (the MarginMSE target)", checks=(finite,)),
    ),
    doc="Corpus-only training triplets (grouprank.adaptation): pseudo-queries the teacher agrees with.",
    key=("query_id",),
)

RUNS = Table(
    "runs", 1,
    (
        Field("query_id", S),
        Field("doc_id", S),
        Field("rank", I, checks=(in_range(1),)),
        Field("score", F, checks=(finite,)),
        Field("system", S),
    ),
    doc="A ranked run (TREC run file as a table).",
    key=("system", "query_id", "doc_id"),
)

METRICS = Table(
    "metrics", 1,
    (
        Field("system", S),
        Field("collection", S),
        Field("split", S),
        Field("measure", S, doc="ir_measures name, e.g. nDCG@10"),
        Field("query_id", S, nullable=True, doc="null for the aggregate over all queries"),
        Field("value", F),
        Field("n_queries", I),
    ),
    doc="Evaluation results.",
)

QUARANTINE = Table(
    "quarantine", 1,
    (
        Field("file", S),
        Field("record", S, doc="line number or record index"),
        Field("field", S, nullable=True),
        Field("reason", S),
        Field("raw", S, nullable=True, doc="the offending input, truncated to 500 chars"),
    ),
    doc="Input records rejected by a loader, with the reason (when quarantine is requested).",
)

ALL_TABLES = {t.name: t for t in (DOCUMENTS, QUERIES, QRELS, CANDIDATES, RANKING, JUDGMENTS, LABELS, RERANKER_RL,
                                  RERANKER_SFT, RETRIEVER_EXAMPLES, ADAPTATION_EXAMPLES, RUNS, METRICS,
                                  QUARANTINE)}
