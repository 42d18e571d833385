"""The candidate teachers and recipes by name, apart from the code that uses them, so the
configuration can check names without importing models or pandas."""
from __future__ import annotations

from dataclasses import dataclass, field

# candidate teachers: signal -> weight (the student's own score is a candidate, never forced)
TEACHERS: dict[str, dict[str, float]] = {
    "bm25": {"bm25": 1.0},
    "mpnet": {"mpnet": 1.0},
    "minilm": {"minilm": 1.0},
    "bm25+mpnet": {"bm25": 1.0, "mpnet": 1.0},
    "bm25+minilm": {"bm25": 1.0, "minilm": 1.0},
    "mpnet+minilm": {"mpnet": 1.0, "minilm": 1.0},
    "bm25+mpnet+minilm": {"bm25": 1.0, "mpnet": 1.0, "minilm": 1.0},
    "bm25+2mpnet": {"bm25": 1.0, "mpnet": 2.0},
    "2bm25+mpnet": {"bm25": 2.0, "mpnet": 1.0},
}


@dataclass(frozen=True)
class Recipe:
    name: str
    loss: str  # RetrieverTrainConfig.loss
    epochs: float = 1.0
    lr: float = 2e-5
    margin_mse_weight: float = 1.0
    extra: dict = field(default_factory=dict)

    def frame(self, rows):
        """The trainer's input: anchor, positive, one negative, and the teacher's margin for MarginMSE."""
        return rows[["anchor", "positive", "negative_1"] + (["label"] if "margin_mse" in self.loss else [])]

    def train_config(self, *, max_steps: int | None, train_tokens: int, batch_size: int = 32):
        """The training settings; the saved model's window is `train_model(max_seq_length=...)`."""
        from grouprank.retriever_training.config import RetrieverTrainConfig
        return RetrieverTrainConfig(loss=self.loss, epochs=self.epochs, lr=self.lr, batch_size=batch_size,
                                    margin_mse_weight=self.margin_mse_weight, max_steps=max_steps,
                                    train_max_seq_length=train_tokens, bf16=True, checkpoint_steps=0)


RECIPES: dict[str, Recipe] = {
    "mnrl": Recipe("mnrl", "mnrl"),
    "mnrl+margin_mse": Recipe("mnrl+margin_mse", "mnrl+margin_mse", margin_mse_weight=10.0),
    "margin_mse": Recipe("margin_mse", "margin_mse", lr=5e-5),
    # a few hundred pseudo-queries make a few dozen steps per epoch: more passes, same rows
    "mnrl@3": Recipe("mnrl@3", "mnrl", epochs=3.0),
    "mnrl+margin_mse@3": Recipe("mnrl+margin_mse@3", "mnrl+margin_mse", epochs=3.0, margin_mse_weight=10.0),
}
