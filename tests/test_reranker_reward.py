"""GroupRank reward: hand-computed values for each term and each penalty, and the
grouping of TRL's flat generation batch by num_generations."""
import math

import pytest

from grouprank.prompts.groupwise import render_target
from grouprank.reranker.reward import (PENALTY_BAD_JSON, PENALTY_BAD_TAGS, GroupwiseReward, group_indices,
                                       groupwise_reward, js_divergence, ndcg_at_k, recall_at_k, reward_one,
                                       to_distribution)

L3 = 1 / math.log2(3)  # discount of rank 2 = 0.6309298


def conv(text):
    return [{"role": "assistant", "content": text}]


def ans(scores):
    return render_target("r", scores)


# ---- NDCG@10 (linear gain default, exponential optional, expected over ties)
def test_ndcg_hand_values():
    assert ndcg_at_k([0, 10], [1, 0]) == pytest.approx(L3)                       # 0.6309
    assert ndcg_at_k([10, 0], [1, 0]) == pytest.approx(1.0)
    # grades [2,1] ranked worst-first: linear (1 + 2/log2 3)/(2 + 1/log2 3); exp (1 + 3/log2 3)/(3 + 1/log2 3)
    assert ndcg_at_k([0, 10], [2, 1]) == pytest.approx(0.8597186, abs=1e-6)
    assert ndcg_at_k([0, 10], [2, 1], gain="exp") == pytest.approx(0.7967076, abs=1e-6)
    # a tie is the mean over both orders: (1 + 1/log2 3)/2
    assert ndcg_at_k([5, 5], [1, 0]) == pytest.approx(0.8154649, abs=1e-6)
    # cut at 10: only the relevant doc at rank 11 -> 0; at rank 10 -> (1/log2 11)/(1 + 1/log2 3)
    pred = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]
    assert ndcg_at_k(pred, [0] * 10 + [1, 0]) == 0.0
    assert ndcg_at_k(pred, [0] * 9 + [1, 0, 1]) == pytest.approx(0.2890648 / (1 + L3), abs=1e-6)  # 0.1772
    assert ndcg_at_k([3, 2, 1], [0, 0, 0]) == 0.0  # no positive grade -> 0


# ---- Recall@10 (relevant = grade >= threshold, default 1)
def test_recall_hand_values():
    pred = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]
    assert recall_at_k(pred, [0] * 9 + [1, 0, 1]) == pytest.approx(0.5)        # rank 10 in, rank 11/12 out
    assert recall_at_k(pred, [0] * 10 + [1, 1]) == pytest.approx(0.0)
    tie = [10, 9, 8, 7, 6, 5, 4, 3, 0, 0, 0, 0]                                  # ranks 9-12 tied: 2 of 4 slots in
    assert recall_at_k(tie, [0] * 11 + [1]) == pytest.approx(0.5)
    assert recall_at_k([0, 10], [1, 0]) == 1.0                                    # groups <= 10: always 1
    assert recall_at_k([1, 2], [1, 0], rel_threshold=2) == 0.0                    # nothing relevant at >= 2
    assert recall_at_k(pred, [0] * 9 + [2, 0, 1], rel_threshold=2) == 1.0


# ---- JS (sum-normalised, log2)
def test_distribution_and_js_hand_values():
    assert to_distribution([10, 0]) == [1.0, 0.0]
    assert to_distribution([0, 0, 0, 0]) == [0.25] * 4
    assert to_distribution([-1.0, -3.0]) == [1.0, 0.0]                           # negative: shift by min
    assert to_distribution([3, 1]) == [0.75, 0.25]
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0)
    assert js_divergence([0.5, 0.5], [1, 0]) == pytest.approx(1.5 - 0.75 * math.log2(3))  # 0.3112781


# ---- the whole reward
@pytest.mark.parametrize("scores,grades,gold,expected", [
    ([10, 0], [1, 0], [1.0, 0.0], 1.3),                                        # perfect: 1 + .2 + .1
    ([0, 10], [1, 0], [1.0, 0.0], L3 + 0.2 + 0.0),                             # reversed: JS = 1
    ([5, 5], [1, 0], [1.0, 0.0], 0.8154649 + 0.2 + 0.1 * (1 - 0.3112781)),     # tie
    ([10, 0], [0, 0], [0.0, 0.0], 0.1 * (1 - 0.3112781)),                      # nothing relevant
    ([10, 0], [1, 0], None, 1.3),                                              # Q from grades
])
def test_reward_well_formed_hand_values(scores, grades, gold, expected):
    r = reward_one(ans(scores), grades, gold)
    assert r.status == "ok"
    assert r.reward == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text,expected", [
    ('<reason>r</reason><answer>{"[1]": 10}</answer>', PENALTY_BAD_JSON),          # incomplete
    ('<reason>r</reason><answer>{"[1]": 10, "[2]": 12}</answer>', PENALTY_BAD_JSON),
    ('<reason>r</reason><answer>not json</answer>', PENALTY_BAD_JSON),
    ('<answer>{"[1]": 10, "[2]": 0}</answer>', PENALTY_BAD_TAGS),
    ('preamble <reason>r</reason><answer>{"[1]": 10, "[2]": 0}</answer>', PENALTY_BAD_TAGS),  # strict
    ("", PENALTY_BAD_TAGS),
])
def test_penalties(text, expected):
    assert PENALTY_BAD_JSON == -0.1 and PENALTY_BAD_TAGS == -0.5
    assert groupwise_reward([conv(text)], [[1, 0]], [[1.0, 0.0]]) == [expected]


def test_trl_call_shape_conversational_and_plain():
    good = ans([10, 0])
    out = groupwise_reward(completions=[conv(good), good], gold_grades=[[1, 0], [1, 0]],
                           gold_scores=[[1.0, 0.0], [1.0, 0.0]], prompts=[[], []], completion_ids=[[1], [2]],
                           trainer_state=None, log_extra=None)
    assert out == pytest.approx([1.3, 1.3])


# ---- batch grouping
def test_group_indices_by_num_generations():
    keys = ["a", "a", "a", "b", "b", "b"]
    assert group_indices(6, 3, keys) == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError):
        group_indices(6, 4)                     # not a multiple
    with pytest.raises(ValueError):
        group_indices(6, 2, keys)               # block [2,3] mixes two prompts
    with pytest.raises(ValueError):
        group_indices(6, 3, ["a", "a", "b", "b", "b", "b"])


def test_reward_logs_per_prompt_spread_from_grouped_batch():
    good, bad_tags, bad_json = ans([10, 0]), "nothing", '<reason>r</reason><answer>{</answer>'
    comps = [conv(good)] * 3 + [conv(good), conv(bad_tags), conv(bad_json)]
    prompts = [[{"role": "user", "content": "A"}]] * 3 + [[{"role": "user", "content": "B"}]] * 3
    grades = [[1, 0]] * 3 + [[0, 1]] * 3
    logged = {}
    fn = GroupwiseReward(num_generations=3)
    r = fn(comps, grades, [[float(g) for g in x] for x in grades], prompts=prompts,
           log_metric=lambda k, v: logged.__setitem__(k, v))
    # prompt B, completion 1: [10, 0] vs grades [0, 1] -> 1/log2 3 + 0.2 + 0 (JS = 1)
    assert r == pytest.approx([1.3, 1.3, 1.3, L3 + 0.2, -0.5, -0.1])
    b = [L3 + 0.2, -0.5, -0.1]
    mean = sum(b) / 3
    std_b = math.sqrt(sum((x - mean) ** 2 for x in b) / 3)
    assert logged["reward/per_prompt_std"] == pytest.approx((0.0 + std_b) / 2)
    assert logged["reward/zero_spread_share"] == pytest.approx(0.5)
    assert logged["format/ok"] == pytest.approx(4 / 6)
    assert logged["format/bad_tags"] == pytest.approx(1 / 6)
    assert logged["format/bad_json"] == pytest.approx(1 / 6)
    assert fn.last_stats == logged


def test_misaligned_slice_falls_back_to_runs_of_equal_prompts():
    # a process slice of 4 with num_generations=3 (multi-GPU): grouped by runs, never wrong blocks
    good = ans([10, 0])
    logged = {}
    prompts = [["A"], ["B"], ["B"], ["B"]]
    groupwise_reward([good, good, "x", "x"], [[1, 0]] * 4, None, prompts=prompts, num_generations=3,
                     log_metric=lambda k, v: logged.__setitem__(k, v))
    # blocks [0] and [1,2,3]: only B has spread: rewards [1.3, -.5, -.5]
    b = [1.3, -0.5, -0.5]
    m = sum(b) / 3
    assert logged["reward/per_prompt_std"] == pytest.approx(math.sqrt(sum((x - m) ** 2 for x in b) / 3))
