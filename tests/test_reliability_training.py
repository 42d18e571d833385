"""Training health (issue 18, item 7): a retriever training whose weights did not change, or whose
loss was not finite, fails with a clear message instead of reporting a trained model. Real
SentenceTransformerTrainer steps on all-MiniLM-L6-v2 (local files), one step each."""
from __future__ import annotations

import pandas as pd
import pytest

from grouprank.errors import UserError
from grouprank.retriever_training.config import RetrieverTrainConfig
from grouprank.retriever_training.train import train_model

pytestmark = pytest.mark.timeout(300)


def frame(n: int = 8) -> pd.DataFrame:
    topics = ["protein folding", "dark matter", "river erosion", "tax policy", "jazz harmony", "volcano ash",
              "bee colonies", "solar wind"]
    return pd.DataFrame({"anchor": [f"what is known about {t}" for t in topics[:n]],
                         "positive": [f"{t} is studied in this article about {t}" for t in topics[:n]],
                         "negative_1": [f"an unrelated note on cooking recipe {i}" for i in range(n)]})


def cfg(**kw) -> RetrieverTrainConfig:
    base = dict(max_steps=1, batch_size=4, train_max_seq_length=32, lr=1e-4, warmup_ratio=0.0)
    base.update(kw)
    return RetrieverTrainConfig(**base)


def test_unchanged_weights_fail_the_training(tmp_path):
    with pytest.raises(UserError, match="left the model's weights unchanged"):
        train_model(frame(), cfg(lr=0.0), tmp_path / "m")
    assert not (tmp_path / "m").exists()  # nothing published
    # the same run accepted when asked for, and a real step passes the check
    train_model(frame(), cfg(lr=0.0, require_update=False), tmp_path / "m0")
    res = train_model(frame(), cfg(), tmp_path / "m1")
    assert res.steps == 1 and (tmp_path / "m1").is_dir()


def test_non_finite_loss_fails_the_training(tmp_path):
    """An absurd learning rate: the first step blows the weights up, the next losses are NaN."""
    with pytest.raises(UserError, match="loss was not finite"):
        train_model(frame(), cfg(lr=1e30, max_steps=3), tmp_path / "m")
    assert not (tmp_path / "m").exists()
