"""Algorithms: how a batch of rollouts becomes per-token advantages (and critic targets).

Pick one in YAML (``model.init_args.algorithm.class_path: lit_vine.VinePPO``) or on the command
line with ``--model.algorithm VinePPO`` (``PPO``, ``VCPPO``, ``GRPO``, ``RLOO``, ``Reinforce``,
``RestEM``, ``DPOPlus``, ``SPOChain``, ``SPOTree``; any case and the usual spellings too:
``vineppo``, ``vc-ppo``, ``dpo+``); its knobs follow, e.g. ``--model.algorithm.num_mc_rollouts 9``.

The methods live by family:

| module | methods |
|---|---|
| ``vine`` | ``VinePPO`` (Monte Carlo step values) |
| ``spo`` | ``SPOChain``, ``SPOTree`` (Monte Carlo values at cut points / over trees) |
| ``critic`` | ``PPO``, ``VCPPO`` (a learned critic, GAE) |
| ``group`` | ``GRPO``, ``RLOO``, ``Reinforce`` (one advantage per response) |
| ``rl_free`` | ``RestEM``, ``DPOPlus`` |

``objective`` tells the trainer which loss the advantages feed: the clipped PPO surrogate, a
weighted negative log-likelihood (RestEM's SFT on filtered samples) or the DPO-Positive loss.
"""

from lit_vine.algorithms.base import Algorithm, Episode, RolloutContext, Whitening, algorithm_class_name, concrete_algorithms, spelling
from lit_vine.algorithms.critic import PPO, VCPPO
from lit_vine.algorithms.group import GRPO, RLOO, GroupBaseline, Reinforce
from lit_vine.algorithms.rl_free import DPOPlus, RestEM
from lit_vine.algorithms.spo import SPOChain, SPOTree, TreeNode, probability_mask
from lit_vine.algorithms.vine import VinePPO, kl_reward_to_go, monte_carlo_values

__all__ = [
    "Algorithm", "Episode", "RolloutContext", "Whitening", "algorithm_class_name", "concrete_algorithms", "spelling",
    "PPO", "VCPPO", "GRPO", "RLOO", "GroupBaseline", "Reinforce", "DPOPlus", "RestEM",
    "SPOChain", "SPOTree", "TreeNode", "probability_mask", "VinePPO", "kl_reward_to_go", "monte_carlo_values",
]
