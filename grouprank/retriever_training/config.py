"""Configuration of the `train_retriever` stage."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from grouprank.config_section import Section


# keys that moved: one name per knob (the encoder's window and backend are the retrieval section's)
MOVED = {"max_seq_length": "retrieval.max_seq_length", "eval_backend": "retrieval.dense_backend"}


class RetrieverTrainConfig(Section):
    """Dense retriever contrastive fine-tuning (grouprank.retriever_training):
    sentence-transformers' SentenceTransformerTrainer, MultipleNegativesRankingLoss (or the cached
    GradCache variant), no-duplicates batches, hard negatives from retriever_examples. The model
    encodes, before and after training, with the retrieval section's encoder settings
    (`retrieval.max_seq_length`, `retrieval.dense_backend`; onnx-int8 evaluates as onnx: quantised
    vectors are not quality-neutral)."""

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data):
        from grouprank.config_section import refuse_moved
        return refuse_moved(data, MOVED, "retriever")

    base_model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers name or path; "
                            "'all-MiniLM-L6-v2' resolves to the bundled offline copy")
    epochs: float = 1.0
    max_steps: int | None = Field(None, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(32, description="examples per batch (in-batch negatives = batch_size - 1)")
    batch_sampler: Literal["no_duplicates", "batch_sampler", "group_by_label"] = Field(
        "no_duplicates", description="sentence-transformers' batch sampler (BatchSamplers); no_duplicates: no two "
        "rows with the same text in a batch, so a query with several positives is never its own in-batch "
        "negative (the default sampler repeats anchors in random batches)")
    lr: float = 2e-5
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = 0.01
    loss: Literal["mnrl", "cached_mnrl", "margin_mse", "distill_kl", "mnrl+margin_mse"] = Field(
        "mnrl", description="mnrl / cached_mnrl: contrastive (in-batch + hard negatives); margin_mse: "
        "sentence-transformers MarginMSELoss on the teacher's soft scores of (positive, negatives); "
        "distill_kl: DistillKLDivLoss on the same scores; mnrl+margin_mse: both, summed "
        "(margin_mse_weight). The distillation losses need the labels input (teacher scores)")
    distill_judge: str | None = Field("local", description="distillation teacher: the 0-10 score of this "
                                      "judge (LABELS.judge_scores); None or absent: the per-query "
                                      "min-max normalised fused score")
    distill_scale: float = Field(0.1, gt=0, description="teacher score multiplier (0-10 -> 0-1, the "
                                 "cosine's range)")
    margin_mse_weight: float = Field(1.0, ge=0, description="mnrl+margin_mse: weight of the MarginMSE term")
    mini_batch_size: int = Field(16, description="cached_mnrl: GradCache mini-batch size")
    scale: float = Field(20.0, description="MNRL temperature inverse (similarity scale)")
    n_negatives: int | None = Field(1, ge=0, description="hard negatives per example (columns "
                                    "negative_1..n); None: as many as the dataset has (its minimum per row). "
                                    "Each adds a sequence per example to every batch: 1 keeps CPU training "
                                    "to minutes and a few GB (4 at batch 32 took 16 GB)")
    drop_short: bool = Field(True, description="rows with fewer than n_negatives negatives: drop (True) or "
                             "top up with in-dataset random documents of other queries (False)")
    max_positives_per_query: int | None = Field(None, description="keep at most this many examples per "
                                                "query (highest positive grade first)")
    train_max_seq_length: int | None = Field(None, description="token limit while training (None: the "
                                             "encoder's window, retrieval.max_seq_length, which the saved "
                                             "model and its evaluation use); shorter trains faster on CPU")
    fp16: bool = False
    bf16: bool = False
    data_source: str = Field("synthetic", description="what the training examples are, for the model card "
                             "(e.g. synthetic, human)")
    eval_split: str = Field("test", description="held-out query split evaluated before/after training "
                            "when qrels are given")
    holdout_fraction: float = Field(0.1, ge=0, lt=1, description="without qrels: fraction of example "
                                    "queries held out of training and evaluated (their positives as qrels)")
    eval_measures: list[str] = Field(default_factory=lambda: ["nDCG@10", "R@100"])
    eval_depth: int = Field(100, gt=0, description="documents retrieved per query for evaluation")
    eval_before: bool = True
    eval_after: bool = True
    checkpoint_steps: int = Field(500, ge=0, description="save a training checkpoint every this many optimizer "
                                  "steps (in <out>/.model.checkpoints, removed when training finishes); a killed "
                                  "training resumes from the last one when rerun with the same examples and "
                                  "settings. 0: no checkpoints")
    require_update: bool = Field(True, description="fail the stage when training left the model's weights "
                                 "unchanged (e.g. lr 0, every loss term zero) or its loss was not finite")
    remine_rounds: int = Field(0, ge=0, description="extra rounds: re-mine hard negatives with the "
                               "fine-tuned model (false-negative guard kept) and train again")
    remine_range: tuple[int, int] = Field((1, 30), description="re-mined negatives are drawn from these "
                                          "ranks (1-based, inclusive) of the fine-tuned model's ranking")
    remine_unjudged: bool = Field(False, description="re-mining may pick documents without a label "
                                  "(else only labelled non-positives of the pools)")
    remine_margin: float = Field(0.05, ge=0, description="unjudged re-mined negatives: skip those whose "
                                 "cosine is within this margin of the positive's")
