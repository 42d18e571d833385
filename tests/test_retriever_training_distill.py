"""Distillation of the teacher's soft scores (retriever.loss = margin_mse / distill_kl /
mnrl+margin_mse): the teacher scores read from LABELS, the trainer's `label` column, and a few real
MarginMSE steps that move the student's (positive - negative) margins toward the teacher's."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data_schemas import LABELS
from grouprank.config import RunConfig


def _labels(rows):
    return LABELS.from_records([{"query_id": q, "doc_id": d, "grade": g, "fused_score": fs, "fused_rank": fr,
                                 "method": "single", "n_judges": 1, "judge_scores": json.dumps(js)}
                                for q, d, g, fs, fr, js in rows])


def test_teacher_scores_from_the_judge_or_the_fused_score():
    from grouprank.retriever_training.data import teacher_scores
    lab = _labels([("q1", "a", 3, -0.0, 1, {"local": 9.0}), ("q1", "b", 0, -1.0, 2, {"local": 2.5}),
                   ("q2", "c", 2, 4.0, 1, {"other": 1}), ("q2", "d", 0, 2.0, 2, {"other": 2}),
                   ("q2", "e", 0, 3.0, 3, {"local": None})])
    t = teacher_scores(lab, "local", 0.1)
    assert t[("q1", "a")] == pytest.approx(0.9) and t[("q1", "b")] == pytest.approx(0.25)
    # no "local" score: per-query min-max normalised fused score
    assert t[("q2", "c")] == pytest.approx(1.0) and t[("q2", "d")] == pytest.approx(0.0)
    assert t[("q2", "e")] == pytest.approx(0.5)
    t2 = teacher_scores(lab, None)
    assert t2[("q1", "a")] == pytest.approx(1.0) and t2[("q1", "b")] == pytest.approx(0.0)


def test_training_frame_carries_teacher_scores_and_drops_unscored_rows():
    from grouprank.retriever_training.data import normalise_examples, to_training_frame
    raw = pd.DataFrame({"query_id": ["q1", "q2", "q3"], "anchor": ["x", "y", "z"],
                        "positive_doc_id": ["a", "c", "f"], "positive": ["A", "C", "F"], "positive_grade": [3, 2, 2],
                        "negative_doc_ids": [["b", "b2"], ["d"], ["g", "h"]],
                        "negatives": [["B", "B2"], ["D"], ["G", "H"]], "negative_grades": [[0, 0], [0], [0, 0]]})
    teacher = {("q1", "a"): 0.9, ("q1", "b"): 0.2, ("q1", "b2"): 0.1, ("q2", "c"): 0.8, ("q2", "d"): 0.3,
               ("q3", "f"): 0.7, ("q3", "g"): 0.4}  # (q3, h) unscored
    fr, st = to_training_frame(normalise_examples(raw), 2, drop_short=True, teacher=teacher)
    assert list(fr.columns) == ["anchor", "positive", "negative_1", "negative_2", "label"]
    assert fr["anchor"].tolist() == ["x"] and fr["label"].tolist() == [[0.9, 0.2, 0.1]]
    assert st["rows_dropped_short"] == 1 and st["rows_dropped_no_teacher"] == 1
    # topped-up random negatives (other queries' documents) get teacher score 0
    fr2, st2 = to_training_frame(normalise_examples(raw.iloc[:2]), 2, drop_short=False, teacher=teacher, seed=1)
    row = fr2[fr2.anchor == "y"].iloc[0]
    assert row["label"] == [0.8, 0.3, 0.0] and st2["rows_topped_up"] == 1


def test_distillation_loss_without_teacher_scores_is_a_clear_error(tmp_path):
    from grouprank.retriever_training.train import train_model
    cfg = RunConfig.model_validate({"retriever": {"loss": "margin_mse", "max_steps": 1}})
    frame = pd.DataFrame({"anchor": ["q"], "positive": ["p"], "negative_1": ["n"]})
    with pytest.raises(ValueError, match="teacher scores"):
        train_model(frame, cfg.retriever, tmp_path / "m")


@pytest.mark.parametrize("loss", ["margin_mse", "mnrl+margin_mse"])
def test_margin_mse_moves_student_margins_toward_the_teacher(load, tmp_path, loss):
    """8 SciFact claims with one cited abstract and one other abstract each; the teacher says the
    margin is 0.6 for half the rows and -0.2 for the others. After a few MarginMSE steps the
    student's margins are closer to the teacher's than before (mean squared error drops)."""
    from grouprank.retriever_training.train import load_model, train_model
    c = load("scifact")
    qr = c.qrels_for("train").to_pandas().drop_duplicates("query_id").head(8)
    qt = dict(zip(c.queries["query_id"].to_pylist(), c.queries["text"].to_pylist()))
    dt = {d: (t or "")[:200] for d, t in zip(c.documents["doc_id"].to_pylist(), c.documents["text"].to_pylist())}
    ids = sorted(dt)
    rows, labels = [], []
    for i, (q, d) in enumerate(zip(qr.query_id, qr.doc_id)):
        other = ids[(i * 37 + 11) % len(ids)]
        rows.append({"anchor": qt[q], "positive": dt[d], "negative_1": dt[other]})
        labels.append([0.8, 0.2] if i % 2 == 0 else [0.3, 0.5])
    frame = pd.DataFrame(rows).assign(label=labels)
    teacher = np.array([a - b for a, b in labels])

    def margins(model):
        A = model.encode(frame["anchor"].tolist(), normalize_embeddings=True)
        P = model.encode(frame["positive"].tolist(), normalize_embeddings=True)
        N = model.encode(frame["negative_1"].tolist(), normalize_embeddings=True)
        return (A * P).sum(1) - (A * N).sum(1)

    cfg = RunConfig.model_validate({"retriever": {"loss": loss, "max_steps": 6, "batch_size": 8, "lr": 2e-4,
                                                  "warmup_ratio": 0.0, "train_max_seq_length": 64}})
    base = load_model("all-MiniLM-L6-v2", max_seq_length=64, device="cpu")
    before = float(((margins(base) - teacher) ** 2).mean())
    res = train_model(frame, cfg.retriever, tmp_path / "m", seed=0)
    after = float(((margins(res.model) - teacher) ** 2).mean())
    assert res.steps == 6 and res.train_loss is not None and np.isfinite(res.train_loss)
    assert after < 0.7 * before, (before, after)
