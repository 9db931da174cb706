"""The callbacks that drive a run: ``RolloutCallback`` makes every RL iteration's experience with a
rollout engine and an algorithm; ``TestReport`` measures the test split before and after training."""

from lit_vine.callbacks.rollout import RolloutCallback, rollout_callback
from lit_vine.callbacks.test_report import TestReport

__all__ = ["RolloutCallback", "TestReport", "rollout_callback"]
