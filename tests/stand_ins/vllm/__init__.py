"""A stand-in for ``vllm`` in multi-process runs (tests/test_ddp.py puts this folder first on the
runs' ``PYTHONPATH``): test_vllm_engine's FakeLLM, which also writes down, per process, the
torchrun variables and the distributed settings its ``LLM`` was built with."""

import json
import os
import types

from test_vllm_engine import FakeLLM

VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class LLM(FakeLLM):
    def __init__(self, **kwargs) -> None:
        record = {name: os.environ.get(name) for name in VARIABLES}
        record.update(backend=kwargs.get("distributed_executor_backend"), tensor_parallel_size=kwargs.get("tensor_parallel_size"))
        with open(os.path.join(os.environ["STAND_IN_OUT"], f"llm_rank{os.environ.get('RANK')}.json"), "w") as f:
            json.dump(record, f)
        super().__init__(**kwargs)


def SamplingParams(**kwargs):  # noqa: N802 (vllm's name)
    return types.SimpleNamespace(**{"n": 1, "stop_token_ids": None, "prompt_logprobs": None, **kwargs})
