from lit_vine.rollout.engine import HFEngine, RolloutEngine, SamplingParams

__all__ = ["HFEngine", "RolloutEngine", "SamplingParams"]
