"""Estimators and objectives of every method against hand-worked values."""

import math

import pytest
import torch

from lit_vine.algorithms import GRPO, RLOO, VCPPO, DPOPlus, Reinforce, RestEM, RolloutContext
from lit_vine.experience import Experience, ExperienceStream, Rollouts
from lit_vine.losses import dpo_positive_loss


def rollouts(scores, group, lengths, token_rewards=None):
    B, T = len(scores), max(lengths)
    mask = torch.zeros(B, T)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    scores = torch.tensor(scores)
    if token_rewards is None:
        token_rewards = torch.zeros(B, T)
        token_rewards[torch.arange(B), torch.tensor(lengths) - 1] = scores
    z = torch.zeros(B, T)
    return Rollouts([None] * B, torch.tensor(group), [[]] * B, [[]] * B, [""] * B, scores, z, z, mask, z, z, token_rewards)


def ctx():
    return RolloutContext(engine=None, tokenizer=None, task=None, sampling=None, seed=0)


def test_grpo_broadcasts_group_normalized_advantage_to_tokens():
    r = rollouts([1.0, 0.0, 1.0, 1.0], [0, 0, 1, 1], [2, 3, 1, 2])
    adv, returns = GRPO().advantages(r, ctx())
    assert returns is None
    a = 0.5 / math.sqrt(0.5)  # group 0: mean 0.5, sample std sqrt(0.5)
    expected = torch.tensor([[a, a, 0.0], [-a, -a, -a], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(adv, expected, atol=1e-5)


def test_rloo_uses_the_other_responses_and_kl_penalized_scores():
    # token rewards include a KL penalty of -0.1 per token (kl_in = "reward"):
    # scores = R - 0.1 * length: [1 - 0.2, 0 - 0.3, 1 - 0.1]
    tr = torch.tensor([[-0.1, 0.9, 0.0], [-0.1, -0.1, -0.1], [0.9, 0.0, 0.0]])
    r = rollouts([1.0, 0.0, 1.0], [0, 0, 0], [2, 3, 1], token_rewards=tr)
    adv, _ = RLOO().advantages(r, ctx())
    s = [0.8, -0.3, 0.9]
    expected = [s[0] - (s[1] + s[2]) / 2, s[1] - (s[0] + s[2]) / 2, s[2] - (s[0] + s[1]) / 2]
    assert torch.allclose(adv[:, 0], torch.tensor(expected), atol=1e-6)
    assert adv[2, 1] == 0 and adv[1, 2] == pytest.approx(expected[1])


def test_reinforce_batch_baseline():
    r = rollouts([1.0, 0.0, 0.0, 0.0], [0, 0, 1, 1], [1, 1, 1, 1])
    adv, _ = Reinforce().advantages(r, ctx())
    assert torch.allclose(adv[:, 0], torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_restem_keeps_correct_answers_up_to_the_cap():
    scores = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    kept = RestEM(max_per_prompt=2).keep(scores, group)
    # prompt 0 has three correct answers, only the first two are kept; prompt 1 keeps its one
    assert kept.tolist() == [True, True, False, False, False, False, True]
    adv, _ = RestEM(max_per_prompt=2).advantages(rollouts(scores.tolist(), group.tolist(), [2] * 7), ctx())
    assert adv.sum(-1).tolist() == [2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 2.0]


def test_dpo_plus_pairs_correct_with_incorrect_of_the_same_prompt():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    group = torch.tensor([0, 0, 0, 0, 1, 1])
    pairs = DPOPlus().pairs(scores, group)
    assert pairs == [(0, 1), (3, 2)]  # prompt 1 has no incorrect answer -> no pair


def test_dpo_positive_loss_by_hand():
    lw, ll, rw, rl = torch.tensor([-4.0]), torch.tensor([-6.0]), torch.tensor([-5.0]), torch.tensor([-5.0])
    beta, lam = 0.1, 50.0
    # chosen got likelier than the reference -> no penalty; margin = (1) - (-1) = 2
    loss, stats = dpo_positive_loss(lw, ll, rw, rl, beta, lam)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-beta * 2))))
    assert stats["dpop_penalty"].item() == 0
    # chosen fell 0.5 below the reference: penalty 0.5 enters the sigmoid times lambda
    lw2 = torch.tensor([-5.5])
    loss2, stats2 = dpo_positive_loss(lw2, ll, rw, rl, beta, lam)
    margin = (-5.5 + 5.0) - (-6.0 + 5.0)
    assert loss2.item() == pytest.approx(-math.log(1 / (1 + math.exp(-beta * (margin - lam * 0.5)))))
    assert stats2["dpop_penalty"].item() == pytest.approx(0.5)


def test_vcppo_defaults_are_decoupled():
    algo = VCPPO()
    assert (algo.lam, algo.critic_lam) == (0.95, 1.0) and algo.value_pretrain_iterations > 0


def test_stream_keeps_pairs_together_and_handles_small_experience():
    B, T = 6, 2
    rows = torch.arange(B, dtype=torch.float)[:, None].expand(B, T)
    exp = Experience(
        input_ids=torch.ones(B, 4, dtype=torch.long),
        attention_mask=torch.ones(B, 4),
        response_mask=torch.ones(B, T),
        old_logprobs=rows.clone(),
        ref_logprobs=rows.clone(),
        advantages=rows.clone(),
        returns=rows.clone(),
        old_values=rows.clone(),
    )
    stream = ExperienceStream(num_mini_batches=8, ppo_epochs=2, shuffle_seed=lambda: 0, unit=2)
    stream.load(exp)
    batches = list(stream)
    assert len(batches) == 2 * 3  # only 3 pairs: 3 mini-batches per epoch, not 8
    for mb in batches:
        first = mb.experience.advantages[:, 0].long().tolist()
        assert first[0] % 2 == 0 and first[1] == first[0] + 1
    empty = ExperienceStream(4, 2, lambda: 0)
    empty.load(exp.select(torch.tensor([], dtype=torch.long)))
    assert list(empty) == []
    with pytest.raises(RuntimeError, match="needs a lit_vine.RolloutCallback"):
        list(empty)  # each iteration's experience is consumed once


def test_decoupled_gae_uses_lambda_actor_for_advantages_and_lambda_critic_for_targets():
    from lit_vine.algorithms import PPO

    # one trajectory of 3 tokens, reward 1 at the end, gamma = 1
    r = rollouts([1.0], [0], [3])
    r.values = torch.tensor([[0.5, 0.6, 0.8]])
    adv, returns = PPO(gamma=1.0, lam=0.5, critic_lam=1.0).advantages(r, ctx())
    # TD errors: d2 = 1 - 0.8, d1 = 0.8 - 0.6, d0 = 0.6 - 0.5
    d0, d1, d2 = 0.1, 0.2, 0.2
    a2 = d2
    a1 = d1 + 0.5 * a2
    a0 = d0 + 0.5 * a1
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2]]), atol=1e-6)
    # lambda_critic = 1: Monte Carlo returns, the final reward at every token
    assert torch.allclose(returns, torch.tensor([[1.0, 1.0, 1.0]]), atol=1e-6)
    # classic PPO (critic_lam=None) regresses the critic on the lambda-actor returns instead
    _, coupled = PPO(gamma=1.0, lam=0.5).advantages(r, ctx())
    assert torch.allclose(coupled, torch.tensor([[a0 + 0.5, a1 + 0.6, a2 + 0.8]]), atol=1e-6)


# ----- each method as its paper's code defines it --------------------------------------------
from lit_vine import PPO, RLModule, VinePPO  # noqa: E402
from lit_vine.errors import ConfigError  # noqa: E402

from conftest import REPO  # noqa: E402

SFT = str(REPO / "checkpoints" / "sft-arith")


@pytest.mark.parametrize(
    "algorithm, whitening",
    [(VinePPO(), "mini_batch"), (PPO(), "mini_batch"), (VCPPO(), "batch"), (GRPO(), "none"), (RLOO(), "none"), (Reinforce(), "none")],
    ids=lambda x: x if isinstance(x, str) else type(x).__name__,
)
def test_each_method_whitens_as_its_papers_code(algorithm, whitening):
    assert RLModule(policy=SFT, algorithm=algorithm, responses_per_prompt=2).whitening == whitening
    assert RLModule(policy=SFT, algorithm=algorithm, responses_per_prompt=2, whiten_advantages="batch").whitening == "batch"


def test_likelihood_objectives_never_whiten():
    assert RLModule(policy=SFT, algorithm=RestEM(), whiten_advantages="batch").whitening == "none"


@pytest.mark.parametrize("algorithm", [GRPO(), RLOO(), DPOPlus()], ids=lambda a: type(a).__name__)
def test_group_methods_reject_one_response_per_prompt(algorithm):
    with pytest.raises(ConfigError, match=f"responses_per_prompt must be >= 2 for {type(algorithm).__name__}"):
        RLModule(policy=SFT, algorithm=algorithm, responses_per_prompt=1)


def test_rloo_gives_an_all_correct_group_zero_advantage():
    r = rollouts([1.0, 1.0, 1.0, 0.0, 1.0], [0, 0, 0, 1, 1], [2, 5, 3, 4, 1])
    adv, _ = RLOO().advantages(r, ctx())
    assert torch.equal(adv[:3], torch.zeros(3, 5))  # whatever the lengths
    assert adv[3, 0] == -1 and adv[4, 0] == 1
