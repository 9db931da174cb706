import math

import pytest
import torch

from lit_vine.losses import aggregate, kl_estimate, ppo_policy_loss, token_logprobs, value_loss


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    d = 0.5  # log pi - log pi_ref
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(d)
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(d * d / 2)
    # VinePPO paper form: exp(ref - logp) - (ref - logp) - 1
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(math.exp(-d) + d - 1)
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref, "k4")


def test_k3_is_unbiased_for_true_kl():
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.5, 0.3, 0.2])
    true_kl = float((p * (p / q).log()).sum())
    # expectation of k3 under p, computed exactly
    k3 = kl_estimate(p.log(), q.log(), "k3")
    assert float((p * k3).sum()) == pytest.approx(true_kl, rel=1e-5)


def test_ppo_clipped_loss_by_hand():
    # token 0: ratio 1.5, A = +1 -> clipped at 1.2 -> -1.2
    # token 1: ratio 0.5, A = +1 -> min(0.5, 0.8) = 0.5 -> -0.5
    # token 2: ratio 0.5, A = -1 -> min(-0.5, -0.8) = -0.8 -> 0.8 (clipped)
    # token 3: ratio 1.0, A = -2, masked out
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 0.5, 1.0]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, stats = ppo_policy_loss(new, old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 0.8) / 3)
    assert stats["clip_frac"].item() == pytest.approx(2 / 3)


def test_asymmetric_clip_uses_clip_high_above_one():
    old = torch.zeros(1, 1)
    new = torch.log(torch.tensor([[1.5]]))
    loss, _ = ppo_policy_loss(new, old, torch.ones(1, 1), torch.ones(1, 1), clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx(-1.28)


def test_value_loss_takes_the_larger_of_clipped_and_unclipped():
    # V = 1.0, V_old = 0.5, G = 0.0, clip 0.2 -> V_clip = 0.7; max(1.0, 0.49) -> 0.5 * 1.0
    # V = 0.0, V_old = 0.5, G = 1.0 -> V_clip = 0.3; max(1.0, 0.49) -> 0.5
    # V = 0.6, V_old = 0.5, G = 1.0 -> V_clip = 0.6; 0.5 * 0.16
    values = torch.tensor([[1.0, 0.0, 0.6]])
    old = torch.tensor([[0.5, 0.5, 0.5]])
    ret = torch.tensor([[0.0, 1.0, 1.0]])
    loss, _ = value_loss(values, old, ret, torch.ones(1, 3), clip=0.2)
    assert loss.item() == pytest.approx((0.5 + 0.5 + 0.08) / 3)
    # a case where clipping dominates: V moved past G, V_clip stays far
    loss2, stats = value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1), clip=0.2)
    assert loss2.item() == pytest.approx(0.5 * 0.8**2)
    assert stats["value_clip_frac"].item() == 1.0


def test_token_mean_seq_mean_and_seq_sum_aggregation():
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0], [5.0, 7.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert aggregate(x, mask, "token_mean").item() == pytest.approx(9 / 5)
    assert aggregate(x, mask, "seq_mean").item() == pytest.approx((1 + 5) / 2)
    assert aggregate(x, mask, "seq_sum").item() == pytest.approx((4 + 5) / 2)  # the reference's KL reduction


def test_log_ratio_clip_keeps_k3_finite():
    logp, ref = torch.tensor([-100.0]), torch.tensor([0.0])
    assert torch.isinf(kl_estimate(logp, ref, "k3"))  # exp(100) overflows float32
    assert kl_estimate(logp, ref, "k3", log_ratio_clip=20.0).item() == pytest.approx(math.exp(20) - 21, rel=1e-6)


def test_dual_clip_caps_the_loss_of_negative_advantages():
    # ratio 3, A = -1: max(3, 1.2) = 3, dual clip c = 2 caps it at 2; ratio 3, A = +1: max(-3, -1.2) = -1.2
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[3.0, 3.0]]))
    adv, mask = torch.tensor([[-1.0, 1.0]]), torch.ones(1, 2)
    plain, _ = ppo_policy_loss(new, old, adv, mask)
    dual, stats = ppo_policy_loss(new, old, adv, mask, dual_clip=2.0)
    assert plain.item() == pytest.approx((3 - 1.2) / 2)
    assert dual.item() == pytest.approx((2 - 1.2) / 2)
    assert stats["dual_clip_frac"].item() == pytest.approx(0.5)


def test_ppo_ratio_uses_the_clamped_log_ratio():
    # log r = 50 clamped to 20: r = e^20, clipped anyway for A > 0; for A < 0 the unclipped term is e^20
    new, old = torch.tensor([[50.0]]), torch.zeros(1, 1)
    loss, _ = ppo_policy_loss(new, old, -torch.ones(1, 1), torch.ones(1, 1), log_ratio_clip=20.0)
    assert loss.item() == pytest.approx(math.exp(20), rel=1e-6)


def test_token_logprobs_and_entropy():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    logp, ent = token_logprobs(logits, torch.tensor([[1]]))
    assert logp.item() == pytest.approx(math.log(0.25))
    assert ent.item() == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))


def test_adaptive_kl_coefficient_by_hand():
    from lit_vine.losses import adaptive_kl_coef

    # KL 1.5x the target: error clipped to 0.2; K_beta = 100 / 1000
    assert adaptive_kl_coef(0.1, kl=1.5, target=1.0, horizon=1000, steps=100) == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    # KL 0.9x the target: error -0.1
    assert adaptive_kl_coef(0.1, kl=0.9, target=1.0, horizon=1000, steps=100) == pytest.approx(0.1 * (1 - 0.1 * 0.1))


def test_entropy_outside_autograd_has_the_same_values_and_gradients():
    logits = torch.randn(2, 3, 7, requires_grad=True)
    tokens = torch.tensor([[1, 2, 3], [4, 5, 6]])
    logp, ent = token_logprobs(logits, tokens)
    logp_ng, ent_ng = token_logprobs(logits, tokens, entropy_grad=False)
    assert ent.requires_grad and not ent_ng.requires_grad
    torch.testing.assert_close(ent_ng, ent.detach(), rtol=0, atol=0)
    (grad,) = torch.autograd.grad((logp.sum() - 0.0 * ent.sum()), logits)
    (grad_ng,) = torch.autograd.grad(logp_ng.sum(), logits)
    torch.testing.assert_close(grad_ng, grad, rtol=0, atol=0)
