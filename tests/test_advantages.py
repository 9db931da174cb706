import math
from types import SimpleNamespace

import pytest
import torch

from lit_vine.advantages import fill_values_past_cap, gae, group_advantages, length_adaptive_lambda, vine_advantages, whiten
from lit_vine.algorithms import VCPPO


def test_gae_lambda_one_is_return_minus_value():
    # One episode of 3 tokens, reward 1 at the end, gamma = lambda = 1:
    # A_t = sum of future rewards - V(s_t) = 1 - V_t.
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.2, 0.5, 0.9, 7.0]])  # last column is padding
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[0.8, 0.5, 0.1, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))


def test_gae_general_gamma_lambda_by_hand():
    g, lam = 0.9, 0.5
    r = [0.1, -0.2, 1.0]
    v = [0.3, 0.4, 0.6]
    # TD errors with V(s_3) = 0 (terminal)
    d2 = r[2] + 0 - v[2]
    d1 = r[1] + g * v[2] - v[1]
    d0 = r[0] + g * v[1] - v[0]
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    adv, ret = gae(torch.tensor([r]), torch.tensor([v]), torch.ones(1, 3), g, lam)
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2]]))
    assert torch.allclose(ret, torch.tensor([[a0 + v[0], a1 + v[1], a2 + v[2]]]))


def test_vine_step_advantages_broadcast_to_step_tokens():
    # Episode 0: 3 steps ending at tokens 2, 4, 6; V(s_0..s_2) = 0.5, 0.25, 0.75; R = 1.
    #   A_0 = 0 + 0.25 - 0.5 = -0.25; A_1 = 0 + 0.75 - 0.25 = 0.5; A_2 = 1 + 0 - 0.75 = 0.25.
    # Episode 1: one step of 3 tokens, V(s_0) = 0.4, R = 0 -> A_0 = -0.4.
    adv = vine_advantages([[0.5, 0.25, 0.75], [0.4]], [[2, 4, 6], [3]], [1.0, 0.0], T=6)
    expected = torch.tensor(
        [[-0.25, -0.25, 0.5, 0.5, 0.25, 0.25], [-0.4, -0.4, -0.4, 0.0, 0.0, 0.0]]
    )
    assert torch.allclose(adv, expected)


def test_values_past_cap_give_zero_advantage_to_late_steps():
    # 4 states, cap 2: V(s_2), V(s_3) are filled with R so that A_2 = A_3 = 0
    values = fill_values_past_cap([0.5, 0.25], num_states=4, reward=1.0)
    assert values == [0.5, 0.25, 1.0, 1.0]
    adv = vine_advantages([values], [[1, 2, 3, 4]], [1.0], T=4)
    # A_0 = 0.25 - 0.5, A_1 = 1 - 0.25 (all later credit), A_2 = 1 - 1, A_3 = 1 + 0 - 1
    assert torch.allclose(adv, torch.tensor([[-0.25, 0.75, 0.0, 0.0]]))


def test_whiten_uses_only_masked_entries_and_the_unbiased_variance():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    out = whiten(x, mask)
    mean, var = 2.5, (1.5**2 * 2 + 0.5**2 * 2) / 3  # 1, 2, 3, 4: divisor N - 1, as the reference
    expected = torch.tensor([[(v - mean) / math.sqrt(var + 1e-8) for v in row] for row in ([1.0, 2.0], [3.0, 4.0])])
    assert torch.allclose(out[:, :2], expected, atol=1e-6)
    assert out[0, 2] == 0 and out[1, 2] == 0


def test_whiten_keeps_precision_when_the_mean_dwarfs_the_spread():
    # 1e8 +- 1 in float64: a one-pass E[x^2] - E[x]^2 cancels to 0 here; two passes give var = 2.
    x = torch.tensor([[1e8 + 1, 1e8 - 1]], dtype=torch.float64)
    out = whiten(x, torch.ones(1, 2, dtype=torch.float64))
    assert torch.allclose(out, torch.tensor([[1.0, -1.0]], dtype=torch.float64) / math.sqrt(2), atol=1e-9)


def test_grpo_rloo_and_batch_baselines_by_hand():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    group = torch.tensor([0, 0, 0, 0, 1, 1])
    # group 0: mean 0.5, sample std sqrt(1/3); group 1: all equal -> 0
    std0 = math.sqrt(((0.5**2) * 4) / 3)
    grpo = group_advantages(scores, group, "mean", normalize_std=True)
    assert torch.allclose(grpo, torch.tensor([0.5 / std0, -0.5 / std0, -0.5 / std0, 0.5 / std0, 0.0, 0.0]), atol=1e-5)
    assert torch.allclose(group_advantages(scores, group, "mean"), torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0]))
    # RLOO: R_i - mean of the other three in group 0, e.g. 1 - (0 + 0 + 1) / 3
    rloo = group_advantages(scores, group, "leave_one_out")
    assert torch.allclose(rloo, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 0.0]))
    batch = group_advantages(scores, group, "batch")
    assert torch.allclose(batch, scores - 4 / 6)


def test_leave_one_out_needs_two_responses():
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(torch.tensor([1.0]), torch.tensor([0]), "leave_one_out")


def test_vapo_length_adaptive_lambda_by_hand():
    # lambda = 1 - 1 / (alpha * length): alpha 0.5 gives 0 for 2 tokens and 0.5 for 4
    assert length_adaptive_lambda(torch.tensor([2, 4, 1000]), 0.05).tolist() == pytest.approx([0.0, 0.0, 0.98])
    assert length_adaptive_lambda(torch.tensor([2, 4]), 0.5).tolist() == pytest.approx([0.0, 0.5])
    rewards = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.6, 0.0, 0.0], [0.5, 0.4, 0.8, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    rollouts = SimpleNamespace(response_mask=mask, token_rewards=rewards, values=values)
    advantages, returns = VCPPO(length_adaptive_alpha=0.5).advantages(rollouts, None)
    # row 0, lambda 0: A_t = delta_t = r_t + V_{t+1} - V_t = [0.6 - 0.2, 1 - 0.6]
    # row 1, lambda 0.5: deltas [-0.1, 0.4, -0.3, 0.5]; A_3 = 0.5, A_2 = -0.3 + 0.25, A_1 = 0.4 - 0.025, A_0 = -0.1 + 0.1875
    assert advantages.tolist() == [pytest.approx([0.4, 0.4, 0.0, 0.0]), pytest.approx([0.0875, 0.375, -0.05, 0.5])]
    # the critic keeps lambda_critic = 1: Monte Carlo returns
    assert returns.tolist() == [pytest.approx([1.0, 1.0, 0.0, 0.0]), pytest.approx([1.0, 1.0, 1.0, 1.0])]
    fixed, _ = VCPPO().advantages(rollouts, None)  # lambda 0.95 for both rows
    assert not torch.allclose(fixed, advantages)
