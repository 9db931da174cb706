"""Methods with a learned critic: PPO (GAE) and VC-PPO (value pretraining, decoupled GAE)."""

from __future__ import annotations

from torch import Tensor

from lit_vine.advantages import gae, length_adaptive_lambda
from lit_vine.algorithms.base import Algorithm, RolloutContext
from lit_vine.errors import check
from lit_vine.experience import Rollouts


class PPO(Algorithm):
    """PPO with a learned critic and GAE (the VinePPO paper's baseline: gamma = lambda = 1).
    Advantages are whitened per PPO mini-batch, as in the VinePPO reference's PPO trainer.

    Args:
        gamma: discount.
        lam: GAE lambda for the policy's advantages.
        critic_lam: GAE lambda for the critic's targets; ``None`` uses ``lam`` (classic PPO).
            VC-PPO's decoupled GAE sets ``lam=0.95, critic_lam=1.0``.
        length_adaptive_alpha: VAPO's length-adaptive policy lambda, 1 - 1 / (alpha * length)
            per response, in place of ``lam`` (VAPO: 0.05; ``critic_lam`` stays); ``None``: off.
    """

    uses_critic = True
    whitening = "mini_batch"

    def __init__(self, gamma: float = 1.0, lam: float = 1.0, critic_lam: float | None = None, length_adaptive_alpha: float | None = None) -> None:
        for name, value in [("gamma", gamma), ("lam", lam), ("critic_lam", critic_lam)]:
            check(value is None or 0 <= value <= 1, f"algorithm.{name} must be in [0, 1], got {value}")
        check(length_adaptive_alpha is None or length_adaptive_alpha > 0, f"algorithm.length_adaptive_alpha must be > 0, got {length_adaptive_alpha}")
        self.gamma, self.lam, self.critic_lam, self.length_adaptive_alpha = gamma, lam, critic_lam, length_adaptive_alpha

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, Tensor]:
        assert rollouts.values is not None, "PPO needs critic values"
        mask, rewards, values = rollouts.response_mask, rollouts.token_rewards, rollouts.values
        lam = self.lam
        if self.length_adaptive_alpha is not None:
            lam = length_adaptive_lambda(mask.sum(-1), self.length_adaptive_alpha).to(rewards.dtype)
        advantages, returns = gae(rewards, values, mask, self.gamma, lam)
        critic_lam = self.lam if self.critic_lam is None else self.critic_lam
        if self.length_adaptive_alpha is not None or critic_lam != self.lam:
            _, returns = gae(rewards, values, mask, self.gamma, critic_lam)
        return advantages, returns


class VCPPO(PPO):
    """Value-calibrated PPO (Yuan et al. 2025): value pretraining, then decoupled GAE. Built on
    verl, which whitens GAE advantages over the whole batch.

    Args:
        lam: lambda_actor for the policy's advantages (best in [0.95, 1.0)).
        critic_lam: lambda_critic for the critic's targets (1.0: Monte Carlo returns, unbiased).
        value_pretrain_iterations: at most this many first iterations train only the critic, on
            responses of the still-frozen SFT policy against lambda = 1 returns.
        value_pretrain_patience: pretraining ends early once the critic's explained variance has
            not improved for this many iterations (more pretraining overfits).
        length_adaptive_alpha: VAPO (Yue et al. 2025) on top: the policy's lambda per response is
            1 - 1 / (alpha * length) (VAPO: alpha 0.05); ``None``: the fixed ``lam``.
    """

    whitening = "batch"

    def __init__(
        self,
        gamma: float = 1.0,
        lam: float = 0.95,
        critic_lam: float = 1.0,
        value_pretrain_iterations: int = 10,
        value_pretrain_patience: int = 2,
        length_adaptive_alpha: float | None = None,
    ) -> None:
        super().__init__(gamma, lam, critic_lam, length_adaptive_alpha)
        check(value_pretrain_iterations >= 0, f"algorithm.value_pretrain_iterations must be >= 0, got {value_pretrain_iterations}")
        check(value_pretrain_patience >= 1, f"algorithm.value_pretrain_patience must be >= 1, got {value_pretrain_patience}")
        self.value_pretrain_iterations, self.value_pretrain_patience = value_pretrain_iterations, value_pretrain_patience
