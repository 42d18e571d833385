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
from grouprank.model_lock import exclusive
from grouprank.trainer_support import checkpoint_step, fingerprint, open_checkpoints, progress_callback, train

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
    resumed_from: int | None = None  # the checkpoint step this training resumed from (None: from the start)

    def stats(self) -> dict[str, Any]:
        return {"n_examples": self.n_examples, "n_negatives": self.n_negatives, "steps": self.steps,
                "epochs": self.epochs, "train_loss": self.train_loss, "train_s": round(self.train_s, 2),
                "resumed_from_step": self.resumed_from}


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
    """SentenceTransformerTrainingArguments from a RetrieverTrainConfig (checkpoints every
    `checkpoint_steps` into `output_dir`, the last two kept; no reporting integrations, no
    in-training evaluation: before/after evaluation is ours)."""
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    from grouprank.console import on_terminal
    on_gpu = torch.cuda.is_available()
    return SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=float(tcfg.epochs),
        max_steps=int(tcfg.max_steps) if tcfg.max_steps else -1,
        per_device_train_batch_size=int(min(tcfg.batch_size, max(1, n_rows))),
        learning_rate=float(tcfg.lr),
        warmup_steps=float(tcfg.warmup_ratio),  # a float in [0, 1) is a ratio of the total steps
        weight_decay=float(tcfg.weight_decay),
        batch_sampler=BatchSamplers(tcfg.batch_sampler),
        fp16=bool(tcfg.fp16 and on_gpu),
        bf16=bool(tcfg.bf16),
        use_cpu=not on_gpu,
        save_strategy="steps" if getattr(tcfg, "checkpoint_steps", 0) else "no",
        save_steps=int(getattr(tcfg, "checkpoint_steps", 0) or 500),
        save_total_limit=2,
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=10,
        logging_nan_inf_filter=False,  # a NaN/inf loss must show in training_loss (check_training_health)
        report_to="none",
        disable_tqdm=not on_terminal(),  # a bar only on a terminal; metrics through the logger either way
        seed=int(seed),
        data_seed=int(seed),
        dataloader_num_workers=0,
    )


def checkpoint_dir(output_dir: str | Path) -> Path:
    """Where the training of `output_dir` keeps its checkpoints (a hidden sibling)."""
    output_dir = Path(output_dir)
    return output_dir.parent / f".{output_dir.name}.checkpoints"


def training_fingerprint(frame: pd.DataFrame, tcfg, base: str, seed: int, continued: bool) -> str:
    """What a checkpoint is valid for: the examples, the training settings, the base model and seed."""
    return fingerprint([list(map(str, frame.columns)), base, int(seed), bool(continued), tcfg.model_dump(mode="json")],
                       *(frame[c].tolist() for c in frame.columns))  # texts and, for distillation, teacher scores


@exclusive
def train_model(frame: pd.DataFrame, tcfg, output_dir: str | Path, *, base_model: str | None = None,
                model=None, dataset_name: str | None = None, seed: int = 13, callbacks: list | None = None,
                max_seq_length: int | None = 256) -> TrainResult:
    """Fine-tune on a text frame `anchor, positive, negative_1..n` (see data.to_training_frame)
    and save the model (with the sentence-transformers model card) to `output_dir`.

    `model`: continue from this in-memory SentenceTransformer (re-mining rounds); else load
    `base_model` (default `tcfg.base_model`). With `tcfg.checkpoint_steps`, checkpoints go to
    `checkpoint_dir(output_dir)`; a rerun with the same examples and settings resumes from the last
    complete one (`TrainResult.resumed_from`); the folder is removed once the model is saved.
    `callbacks`: extra transformers TrainerCallbacks. `max_seq_length`: the encoder's window (the
    run's `retrieval.max_seq_length`), saved with the model; `tcfg.train_max_seq_length` while training."""
    if len(frame) == 0:
        raise ValueError("no training examples (every row was dropped: see the data stats)")
    if tcfg.loss in DISTILL_LOSSES and "label" not in frame.columns:
        raise ValueError(f"loss {tcfg.loss!r} needs teacher scores (a 'label' column): give the labels input")
    offline()
    from sentence_transformers import SentenceTransformerTrainer
    from .data import to_dataset
    continued = model is not None
    if model is None:
        model = load_model(base_model or tcfg.base_model, max_seq_length=max_seq_length,
                           dataset_name=dataset_name)
    saved_len = model.max_seq_length
    train_len = tcfg.train_max_seq_length or max_seq_length
    if train_len:
        model.max_seq_length = int(train_len)
    loss = make_loss(model, tcfg)
    ds = to_dataset(frame)
    before = weight_probe(model)
    output_dir = Path(output_dir)
    keep = bool(getattr(tcfg, "checkpoint_steps", 0))
    resume = None
    if keep:
        scratch = checkpoint_dir(output_dir)
        resume = open_checkpoints(scratch, training_fingerprint(frame, tcfg, str(base_model or tcfg.base_model),
                                                                seed, continued), "retriever training")
    else:
        scratch = Path(tempfile.mkdtemp(prefix=".trainer-", dir=output_dir.parent if output_dir.parent.exists() else None))
    ok = False
    try:
        args = training_arguments(tcfg, scratch, len(frame), seed)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss,
                                             callbacks=[progress_callback("retriever training"), *(callbacks or [])])
        t0 = time.time()
        out = train(trainer, resume)
        dt = time.time() - t0
        history = list(trainer.state.log_history)
        ok = True
    finally:
        if ok or not keep:  # a failed or killed training keeps its checkpoints for the rerun
            shutil.rmtree(scratch, ignore_errors=True)
        model.max_seq_length = saved_len  # the saved model encodes with the evaluation length
    if getattr(tcfg, "require_update", True):
        check_training_health(model, before, out, history, lr=tcfg.lr)
    save_model(model, output_dir)
    n_neg = sum(1 for c in frame.columns if c.startswith("negative_"))
    return TrainResult(model_dir=output_dir, n_examples=len(frame), n_negatives=n_neg,
                       steps=int(out.global_step), epochs=float(out.metrics.get("epoch", tcfg.epochs) or 0),
                       train_loss=float(out.training_loss) if out.training_loss is not None else None,
                       train_s=dt, model=model,
                       resumed_from=checkpoint_step(resume))


def weight_probe(model, n: int = 12) -> list[tuple[str, Any]]:
    """Copies of up to `n` trainable parameter tensors spread over the model (first, last and evenly
    between): an optimizer step that moved the model moves every one of them, and a copy of a few
    tensors costs little next to a copy of the whole model."""
    params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if not params:
        return []
    idx = sorted({round(i * (len(params) - 1) / max(1, n - 1)) for i in range(min(n, len(params)))})
    return [(params[i][0], params[i][1].detach().clone()) for i in idx]


def check_training_health(model, before: list[tuple[str, Any]], out, history: list[dict] | None = None,
                          lr: float | None = None) -> None:
    """Raise a UserError when the training's loss was not finite (NaN/inf anywhere in its log) or
    it left the probed weights unchanged: such a model would be reported as trained."""
    import math

    import torch

    from grouprank.errors import UserError
    hist = [h.get("loss") for h in (history or []) if "loss" in h]
    losses = [x for x in [getattr(out, "training_loss", None), *hist] if x is not None]
    bad = [x for x in losses if not math.isfinite(float(x))]
    if bad:
        raise UserError(f"train_retriever: the training loss was not finite ({bad[0]}) after {out.global_step} "
                        "steps: lower retriever.lr, check the examples (empty texts?) or turn off fp16")
    params = dict(model.named_parameters())
    changed = [k for k, b in before if k in params and not torch.equal(params[k].detach().to(b.device), b)]
    if before and not changed:
        raise UserError(f"train_retriever: {out.global_step} training steps left the model's weights unchanged "
                        f"(loss {out.training_loss}): learning rate {lr} too small, "
                        "or every loss term was zero (e.g. no in-batch negatives with batch size 1); set "
                        "retriever.require_update=false to accept it")
    # NaN weights with a finite logged loss (the last step's update) are just as unusable
    for k, p in params.items():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise UserError(f"train_retriever: parameter {k} holds NaN/inf after training")


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
