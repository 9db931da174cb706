from lit_vine.rollout.engine import HFEngine, RolloutEngine, SamplingParams
from lit_vine.rollout.vllm import VLLMEngine, WeightSyncError

__all__ = ["HFEngine", "RolloutEngine", "SamplingParams", "VLLMEngine", "WeightSyncError"]
