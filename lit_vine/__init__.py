"""lit-vine: reinforcement learning for step-by-step reasoning, VinePPO at its heart, on Lightning."""

from lit_vine.algorithms import GRPO, PPO, RLOO, VCPPO, Algorithm, DPOPlus, Reinforce, RestEM, SPOChain, SPOTree, VinePPO
from lit_vine.data import SFTDataModule, TaskDataModule
from lit_vine.policy_module import PolicyModule
from lit_vine.rl import RLModule
from lit_vine.callbacks.rollout import RolloutCallback
from lit_vine.rollout.engine import HFEngine, RolloutEngine, SamplingParams
from lit_vine.sft import SFTModule
from lit_vine.tasks import ArithmeticTask, DatasetTask, Problem, Task

__all__ = [
    "GRPO",
    "PPO",
    "RLOO",
    "VCPPO",
    "DPOPlus",
    "Reinforce",
    "RestEM",
    "Algorithm",
    "ArithmeticTask",
    "DatasetTask",
    "HFEngine",
    "PolicyModule",
    "Problem",
    "RLModule",
    "RolloutCallback",
    "RolloutEngine",
    "SFTDataModule",
    "SPOChain",
    "SPOTree",
    "SFTModule",
    "SamplingParams",
    "Task",
    "TaskDataModule",
    "VinePPO",
]
