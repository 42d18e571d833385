"""Contrastive fine-tuning with sentence-transformers' `SentenceTransformerTrainer`.

Loss: `MultipleNegativesRankingLoss` (InfoNCE over in-batch negatives plus the hard negatives of
every example in the batch), or `CachedMultipleNegativesRankingLoss` (GradCache: the same loss
with batches larger than memory allows, computed in `mini_batch_size` chunks). Batches come from
the no-duplicates sampler (`BatchSamplers.NO_DUPLICATES`), so a text never appears twice in a batch
— a duplicate would be an in-batch "negative" identical to a positive.

Everything runs offline: the base model resolves through `grouprank.first_stage.dense.resolve_model`
("all-MiniLM-L6-v2" -> the bundled copy) and loads with `local_files_only=True`.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from grouprank.first_stage.model_files import offline

log = logging.getLogger(__name__)

CARD_SECTION = "## GroupRank fine-tuning"


@dataclass
class TrainResult:
    model_dir: Path
    n_examples: int
    n_negatives: int
    steps: int
    epochs: float
    train_loss: float | None
    train_s: float
    model: Any = field(default=None, repr=False)  # the trained SentenceTransformer (in memory)

    def stats(self) -> dict[str, Any]:
        return {"n_examples": self.n_examples, "n_negatives": self.n_negatives, "steps": self.steps,
                "epochs": self.epochs, "train_loss": self.train_loss, "train_s": round(self.train_s, 2)}


def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(model: str, *, max_seq_length: int | None = 256, device: str | None = None,
               dataset_name: str | None = None):
    """A SentenceTransformer from a local path or the bundled alias, with a model card set up
    for offline generation."""
    offline()
    from sentence_transformers import SentenceTransformer, SentenceTransformerModelCardData
    from grouprank.first_stage.dense import resolve_model
    path = resolve_model(model)
    card = SentenceTransformerModelCardData(
        language="en", local_files_only=True, generate_widget_examples=False,
        model_name=f"{Path(path).name} fine-tuned by grouprank (contrastive, MNRL)",
        train_datasets=[{"name": dataset_name}] if dataset_name else [],
        tags=["sentence-transformers", "sentence-similarity", "feature-extraction", "dense", "grouprank"])
    st = SentenceTransformer(path, device=device or default_device(), local_files_only=True,
                             model_card_data=card)
    if max_seq_length:
        st.max_seq_length = int(max_seq_length)
    return st


DISTILL_LOSSES = ("margin_mse", "distill_kl", "mnrl+margin_mse")


def make_loss(model, tcfg):
    """The configured loss. The distillation losses read the dataset's `label` column: per row the
    teacher's scores [s(q, positive), s(q, negative_1), ...] (data.add_teacher_labels)."""
    from sentence_transformers.sentence_transformer.losses import (CachedMultipleNegativesRankingLoss,
                                                                   DistillKLDivLoss, MarginMSELoss,
                                                                   MultipleNegativesRankingLoss)
    if tcfg.loss == "cached_mnrl":
        return CachedMultipleNegativesRankingLoss(model, scale=tcfg.scale, mini_batch_size=tcfg.mini_batch_size)
    if tcfg.loss == "mnrl":
        return MultipleNegativesRankingLoss(model, scale=tcfg.scale)
    if tcfg.loss == "margin_mse":
        return MarginMSELoss(model)
    if tcfg.loss == "distill_kl":
        return DistillKLDivLoss(model)
    if tcfg.loss == "mnrl+margin_mse":
        return _SumLoss(model, [MultipleNegativesRankingLoss(model, scale=tcfg.scale), MarginMSELoss(model)],
                        [1.0, float(tcfg.margin_mse_weight)])
    raise ValueError(f"unknown retriever loss {tcfg.loss!r}")


def _SumLoss(model, losses, weights):
    """Weighted sum of losses that share one forward pass (each has compute_loss_from_embeddings)."""
    import torch
    from sentence_transformers.base.losses.merged_forward import embed_columns

    class SumLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.parts = torch.nn.ModuleList(losses)
            self.weights = list(weights)

        def forward(self, sentence_features, labels):
            emb = embed_columns(self.model, sentence_features)
            return sum(w * part.compute_loss_from_embeddings(emb, labels)
                       for w, part in zip(self.weights, self.parts))

        @property
        def citation(self) -> str:
            return ""

    return SumLoss()


def training_arguments(tcfg, output_dir: str | Path, n_rows: int, seed: int = 13):
    """SentenceTransformerTrainingArguments from a RetrieverTrainConfig (no checkpoints, no
    reporting integrations, no in-training evaluation: before/after evaluation is ours)."""
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    on_gpu = torch.cuda.is_available()
    return SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=float(tcfg.epochs),
        max_steps=int(tcfg.max_steps) if tcfg.max_steps else -1,
        per_device_train_batch_size=int(min(tcfg.batch_size, max(1, n_rows))),
        learning_rate=float(tcfg.lr),
        warmup_steps=float(tcfg.warmup_ratio),  # a float in [0, 1) is a ratio of the total steps
        weight_decay=float(tcfg.weight_decay),
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        fp16=bool(tcfg.fp16 and on_gpu),
        bf16=bool(tcfg.bf16),
        use_cpu=not on_gpu,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=10,
        report_to="none",
        disable_tqdm=True,
        seed=int(seed),
        data_seed=int(seed),
        dataloader_num_workers=0,
    )


def train_model(frame: pd.DataFrame, tcfg, output_dir: str | Path, *, base_model: str | None = None,
                model=None, dataset_name: str | None = None, seed: int = 13) -> TrainResult:
    """Fine-tune on a text frame `anchor, positive, negative_1..n` (see data.to_training_frame)
    and save the model (with the sentence-transformers model card) to `output_dir`.

    `model`: continue from this in-memory SentenceTransformer (re-mining rounds); else load
    `base_model` (default `tcfg.base_model`)."""
    if len(frame) == 0:
        raise ValueError("no training examples (every row was dropped: see the data stats)")
    if tcfg.loss in DISTILL_LOSSES and "label" not in frame.columns:
        raise ValueError(f"loss {tcfg.loss!r} needs teacher scores (a 'label' column): give the labels input")
    offline()
    from sentence_transformers import SentenceTransformerTrainer
    from .data import to_dataset
    if model is None:
        model = load_model(base_model or tcfg.base_model, max_seq_length=tcfg.max_seq_length,
                           dataset_name=dataset_name)
    saved_len = model.max_seq_length
    train_len = tcfg.train_max_seq_length or tcfg.max_seq_length
    if train_len:
        model.max_seq_length = int(train_len)
    loss = make_loss(model, tcfg)
    ds = to_dataset(frame)
    output_dir = Path(output_dir)
    scratch = Path(tempfile.mkdtemp(prefix=".trainer-", dir=output_dir.parent if output_dir.parent.exists() else None))
    try:
        args = training_arguments(tcfg, scratch, len(frame), seed)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss)
        t0 = time.time()
        out = trainer.train()
        dt = time.time() - t0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        model.max_seq_length = saved_len  # the saved model encodes with the evaluation length
    save_model(model, output_dir)
    n_neg = sum(1 for c in frame.columns if c.startswith("negative_"))
    return TrainResult(model_dir=output_dir, n_examples=len(frame), n_negatives=n_neg,
                       steps=int(out.global_step), epochs=float(out.metrics.get("epoch", tcfg.epochs) or 0),
                       train_loss=float(out.training_loss) if out.training_loss is not None else None,
                       train_s=dt, model=model)


def save_model(model, output_dir: str | Path) -> Path:
    """Save atomically: into a temporary sibling, then rename over `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save(str(tmp))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def write_card(model_dir: str | Path, info: Mapping[str, Any]) -> Path:
    """Add the GroupRank section to the model card (README.md; created when sentence-transformers
    could not generate one) and write the same facts as `grouprank_training.json`.

    `info` keys used: data (list of {path, sha256, rows}), base_model, config (dict),
    data_stats, train, eval (before/after metrics), rounds, collection, eval_queries."""
    model_dir = Path(model_dir)
    readme = model_dir / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else (
        "---\nlibrary_name: sentence-transformers\ntags:\n- sentence-transformers\n- grouprank\n---\n\n"
        f"# {model_dir.name}\n\nA sentence-transformers model fine-tuned by grouprank.\n")
    if CARD_SECTION in text:
        text = text[:text.index(CARD_SECTION)].rstrip() + "\n"
    lines = [CARD_SECTION, "",
             "Contrastively fine-tuned by the grouprank pipeline (`grouprank train-retriever`) with "
             "sentence-transformers' `SentenceTransformerTrainer`.", ""]
    lines.append(f"- Base model: `{info.get('base_model')}`")
    for d in info.get("data", []):
        lines.append(f"- Training data: `{d.get('path')}` (sha256 {d.get('sha256')}, {d.get('rows')} rows, "
                     f"source: {d.get('source', 'synthetic')})")
    ds = info.get("data_stats") or {}
    if ds:
        lines.append(f"- Examples used: {ds.get('rows_out')} from {ds.get('queries')} queries, "
                     f"{ds.get('n_negatives')} hard negatives each (dropped short rows: "
                     f"{ds.get('rows_dropped_short', 0)})")
    tr = info.get("train") or {}
    if tr:
        lines.append(f"- Training: {tr.get('steps')} steps, {tr.get('epochs')} epochs, final loss "
                     f"{tr.get('train_loss')}, {tr.get('train_s')} s")
    if info.get("rounds"):
        lines.append(f"- Rounds (1 + re-mining rounds): {len(info['rounds'])}")
    ev = info.get("eval") or {}
    if ev:
        lines += ["", f"### Evaluation ({info.get('eval_queries', 'held-out queries')})", "",
                  "| model | " + " | ".join(sorted({m for v in ev.values() for m in v})) + " |",
                  "|---|" + "---|" * len(sorted({m for v in ev.values() for m in v}))]
        measures = sorted({m for v in ev.values() for m in v})
        for name, vals in ev.items():
            lines.append(f"| {name} | " + " | ".join(f"{vals.get(m, float('nan')):.4f}" for m in measures) + " |")
    lines += ["", "### Configuration", "", "```json", json.dumps(info.get("config", {}), indent=2, default=str),
              "```", ""]
    readme.write_text(text.rstrip() + "\n\n" + "\n".join(lines), encoding="utf-8")
    (model_dir / "grouprank_training.json").write_text(json.dumps(dict(info), indent=2, default=str))
    return readme
