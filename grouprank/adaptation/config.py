"""Configuration of the corpus-only adaptation arm (`grouprank.adaptation`, stage `adapt`)."""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator, model_validator

from grouprank.config_section import Section

# one name per knob: the student is the retriever that `train_retriever` fine-tunes, encoded with the
# retrieval section's window and backend
MOVED = {"student": "retriever.base_model", "student_tokens": "retrieval.max_seq_length",
         "backend": "retrieval.dense_backend"}


@dataclass(frozen=True)
class Student:
    """The model adapted and how it encodes (from a run's configuration: `student_of`)."""
    model: str = "all-MiniLM-L6-v2"
    tokens: int = 256
    backend: str = "auto"


def student_of(cfg) -> Student:
    """The student of a RunConfig: `retriever.base_model`, encoded like the retrieve stage encodes."""
    return Student(cfg.retriever.base_model, cfg.retrieval.max_seq_length or 256, cfg.retrieval.dense_backend)


class AdaptationConfig(Section):
    """From a bare corpus to a fine-tuned student (GPL's setting): pseudo-queries, a teacher and a
    recipe chosen on held-out synthetic queries; the collection's queries and qrels only score it."""
    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data):
        from grouprank.config_section import refuse_moved
        return refuse_moved(data, MOVED, "adaptation")

    enabled: bool = Field(False, description="run the `adapt` stage in a whole-pipeline run (the `grouprank "
                          "adapt` command turns it on); off, the stage writes a report saying so")
    per_doc: int | None = Field(None, ge=1, le=4, description="pseudo-queries per document; None: 2 below "
                                "`small_corpus` documents, else 1")
    small_corpus: int = Field(3000, ge=1)
    # off by default: with SmolLM2-135M (the only instruct LLM installable here) 300 Cranfield documents took
    # 17 min, 76 answers parsed, 40 became rows, test +0.0002 (bench/results/adapt_llm/cranfield_smollm2.json)
    generated_docs: int = Field(0, ge=0, description="training documents that also get an LLM-generated "
                                "question (template queries.question, endpoint queries.endpoint or the first "
                                "of llm.endpoints, the run's LLM cache); it trains like an extractive "
                                "pseudo-query (round-trip filter by the teacher), with the whole document as "
                                "its positive; 0: none")
    holdout: float = Field(0.15, gt=0, lt=1, description="share of documents whose query is held out to "
                           "choose the teacher and the recipe")
    max_holdout: int = Field(300, ge=1)
    max_train_rows: int = Field(3000, ge=1, description="training rows at most (the teacher keeps 1/5 to "
                                "2/3 of the queries it labels: 1.6x this many are labelled)")
    teachers: tuple[str, ...] = Field(
        ("bm25", "mpnet", "bm25+mpnet", "bm25+minilm", "mpnet+minilm", "bm25+mpnet+minilm", "bm25+2mpnet",
         "2bm25+mpnet"),
        description="candidate teachers (grouprank.adaptation.teacher.TEACHERS); the student alone is never one")
    # 3 epochs: on Cranfield held-out synthetic nDCG@10 went 0.616 (1 epoch) -> 0.631 (mnrl@3) -> 0.642
    # (mnrl+margin_mse@3), the test 0.381 -> 0.388 -> 0.389 (bench/results/adapt/cranfield.json)
    recipes: tuple[str, ...] = Field(("mnrl@3", "mnrl+margin_mse@3"),
                                     description="candidate recipes (grouprank.adaptation.choices.RECIPES)")
    mpnet_tokens: int = Field(128, ge=16, description="the mpnet teacher's window in tokens")
    train_tokens: int = Field(128, ge=16, description="token limit while fine-tuning the student (its "
                              "window when encoding is retrieval.max_seq_length)")
    depth: int = Field(100, ge=5, description="each signal's top documents pooled per query")
    keep_top: int = Field(3, ge=1, description="a pseudo-query trains only when the teacher ranks its source "
                          "document in this top (round-trip filter)")
    neg_ranks: tuple[int, int] = Field((10, 30), description="hard negatives from these teacher ranks "
                                       "(clear of unlabelled positives at the very top)")
    margin_scale: float = Field(0.1, gt=0)
    max_steps: int | None = Field(None, ge=1)
    keep_base_unless_better: bool = Field(True, description="keep the student as shipped when no recipe "
                                          "beats it on held-out synthetic queries (a recipe scoring above its "
                                          "teacher there is never chosen: arm.choose_recipe)")

    @field_validator("teachers", "recipes")
    @classmethod
    def _known_choices(cls, v, info):
        from .choices import RECIPES, TEACHERS
        # the student alone is never a teacher
        allowed = [t for t in TEACHERS if t != "minilm"] if info.field_name == "teachers" else list(RECIPES)
        bad = [x for x in v if x not in allowed]
        if bad or not v:
            raise ValueError(f"unknown {info.field_name} {bad}; choose from {allowed}")
        return tuple(v)

    @field_validator("neg_ranks")
    @classmethod
    def _ranks(cls, v):
        lo, hi = v
        if not 1 <= lo < hi:
            raise ValueError("neg_ranks: (lo, hi) with 1 <= lo < hi")
        return v
