"""Training health of the reranker (issue 18, item 7): a logged SFT loss or GRPO reward that is NaN
or infinite fails the stage with a clear message; the TRL configs keep NaN visible in the logs
(`logging_nan_inf_filter=False`); the weights-unchanged check (`require_grpo_update`) still holds."""
from __future__ import annotations

import math

import pytest

from grouprank.config import RerankerConfig
from grouprank.errors import UserError
from grouprank.reranker.stage import check_training_health
from grouprank.reranker.train import TrainingHealthError, check_finite_log, nonfinite_entries


def _sft_log(losses):
    """An SFTTrainer-shaped log_history: one entry per logging step, then the train summary."""
    hist = [{"loss": v, "grad_norm": 1.0, "learning_rate": 1e-5, "epoch": 0.1 * (i + 1), "step": 10 * (i + 1)}
            for i, v in enumerate(losses)]
    return hist + [{"train_runtime": 1.0, "train_loss": 1.5, "epoch": 1.0, "step": 10 * len(losses)}]


def _grpo_log(rewards):
    return [{"loss": 0.01, "reward": r, "reward_std": 0.2, "completions/mean_length": 30.0, "step": i + 1}
            for i, r in enumerate(rewards)]


def test_nan_in_sft_loss_or_grpo_reward_fails_with_the_step():
    check_finite_log(_sft_log([2.1, 1.8, 1.5]), "sft")          # healthy: no error
    check_finite_log(_grpo_log([-0.5, -0.2, 0.1]), "grpo")
    with pytest.raises(TrainingHealthError, match=r"SFT logged a non-finite loss \(step 20: loss=nan\)"):
        check_finite_log(_sft_log([2.1, float("nan"), 1.5]), "sft")
    with pytest.raises(TrainingHealthError, match=r"GRPO logged a non-finite reward/loss \(step 3: reward=inf\)"):
        check_finite_log(_grpo_log([-0.5, -0.2, math.inf]), "grpo")
    # the final summary's train_loss and the GRPO loss count too; a None / non-number is not finite
    bad = _sft_log([2.0]) + [{"train_loss": float("-inf"), "step": 11}]
    assert nonfinite_entries(bad, ("loss", "train_loss")) == [(11, "train_loss", float("-inf"))]
    assert nonfinite_entries([{"reward": None, "step": 4}], ("reward",)) == [(4, "reward", None)]
    # metrics that are not health keys are ignored (a NaN reward_std of a one-completion group)
    assert nonfinite_entries([{"reward": 0.1, "reward_std": float("nan"), "step": 1}], ("reward",)) == []
    assert issubclass(TrainingHealthError, UserError)  # the CLI prints it as one line


def test_stage_check_on_the_summary():
    ok = {"sft_loss": [2.0, 1.0], "grpo_reward": [-0.5, 0.25], "grpo_weights_changed": True}
    check_training_health(ok, grpo_ran=True)
    with pytest.raises(TrainingHealthError, match=r"SFT logged a non-finite loss \(step 2: loss=nan\)"):
        check_training_health({**ok, "sft_loss": [2.0, float("nan")]}, grpo_ran=True)
    with pytest.raises(TrainingHealthError, match=r"GRPO logged a non-finite reward/loss \(step 1: reward=nan\)"):
        check_training_health({**ok, "grpo_reward": [float("nan"), 0.1]}, grpo_ran=True)
    # a NaN is a failure even when the weights-unchanged check is switched off
    with pytest.raises(TrainingHealthError, match="non-finite"):
        check_training_health({**ok, "grpo_reward": [float("nan")]}, grpo_ran=True, require_grpo_update=False)
    # the existing weights-unchanged rule is kept
    same = {**ok, "grpo_reward": [-0.5, -0.5], "grpo_weights_changed": False}
    with pytest.raises(UserError, match=r"left the policy's weights unchanged \(rewards \[-0.5, -0.5\]\)"):
        check_training_health(same, grpo_ran=True)
    check_training_health(same, grpo_ran=True, require_grpo_update=False)
    check_training_health({"sft_loss": [1.0]}, grpo_ran=False)


def test_trainer_configs_log_nan_as_nan(tmp_path):
    from grouprank.reranker.train import make_grpo_config, make_sft_config
    rc = RerankerConfig(base_model="tiny", bf16=False, sft_args={"logging_nan_inf_filter": True},
                        grpo_args={"logging_nan_inf_filter": True})
    sft = make_sft_config(rc, tmp_path / "sft")
    grpo = make_grpo_config(rc, tmp_path / "grpo", per_device_train_batch_size=2, num_generations=2)
    # forced off, even when the pass-through args ask for the filter (it would hide a NaN step)
    assert sft.logging_nan_inf_filter is False and grpo.logging_nan_inf_filter is False


@pytest.mark.timeout(300)
def test_diverged_sft_fails_before_grpo_on_the_tiny_policy(tmp_path):
    """A real SFTTrainer run on the tiny Qwen2 policy with an absurd learning rate: the third step's
    loss is NaN. With 3 steps and logging every 10, only the run's `train_loss` is logged; with the
    trainer's NaN filter (transformers' default) it would be the finite mean of the first steps.
    The run stops before GRPO and publishes no model."""
    import torch
    torch.set_num_threads(1)
    from grouprank.collections import load_collection
    from grouprank.config import RunConfig
    from grouprank.reranker.data import groups_from_qrels
    from grouprank.reranker.train import train_reranker
    coll = load_collection("trec_dl19_passage")
    qids = sorted(set(coll.qrels["query_id"].to_pylist()))[:3]
    rl, sft = groups_from_qrels(coll, group_sizes=(3,), groups_per_query=2, max_doc_chars=60, query_ids=qids)
    cfg = RunConfig.load(None, {"work_dir": str(tmp_path / "w"), "reranker.base_model": "tiny",
                                "reranker.sft_lr": 1e30, "reranker.sft_epochs": 1.0, "reranker.bf16": False,
                                "reranker.per_device_batch_size": 2, "reranker.grpo_steps": 1,
                                "reranker.num_generations": 2})
    with pytest.raises(TrainingHealthError, match=r"SFT logged a non-finite loss \((?:step \d+: \w+=\w+, )*step 3: train_loss=nan\)"):
        train_reranker(cfg, sft, rl, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sft"]  # no grpo/, no final/
