"""What SFT and RL share: a policy with its tokenizer and held-out evaluation with a rollout engine."""

from __future__ import annotations

import json
import os
import zlib

import torch
import torch.distributed as dist
from lightning import LightningModule
from torchmetrics import MeanMetric

from lit_vine.devices import compute_dtype, keep_rope_in_float32
from lit_vine.distributed import all_ranks_mesh, is_sharded, shard
from lit_vine.errors import ConfigError, check
from lit_vine.evaluation import EvalConfig, evaluate
from lit_vine.faults import fit_prompt
from lit_vine.models import TinyConfig, load_policy_and_tokenizer
from lit_vine.rollout.engine import HFEngine, RolloutEngine
from lit_vine.tasks.base import Problem, Task


class PolicyModule(LightningModule):
    """Holds the policy and evaluates it on the datamodule's validation and test problems.

    ``validate``/``test`` log greedy accuracy, pass@1 over ``evaluation.num_samples`` samples and
    maj@n, and write one JSON line per problem to ``<log_dir>/predictions/``. They sample with the
    trainer's ``RolloutCallback`` engine, or an ``HFEngine`` when there is none.
    """

    def __init__(
        self,
        policy: str,
        max_new_tokens: int = 64,
        evaluation: EvalConfig = EvalConfig(),
        tiny: TinyConfig = TinyConfig(),
        seed: int = 0,
    ) -> None:
        super().__init__()
        check(max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {max_new_tokens}")
        try:
            self.policy, self.tokenizer = load_policy_and_tokenizer(policy, tiny)
        except FileNotFoundError as err:
            raise ConfigError(f"policy: {err}") from None
        self.policy.train()  # from_pretrained returns eval mode
        self.context_length = getattr(self.policy.config, "max_position_embeddings", None)
        check(self.context_length is None or max_new_tokens < self.context_length,
              f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the policy's context of {self.context_length} tokens")
        self._long_prompt_ids: set[str] = set()  # prompts cut to fit the context, warned once each
        self._own_engine: HFEngine | None = None
        self.max_new_tokens, self.evaluation, self.seed = max_new_tokens, evaluation, seed
        self.eval_metrics = torch.nn.ModuleDict({name: MeanMetric() for name in self._metric_names()})
        self._records: list[dict] = []

    def _metric_names(self) -> list[str]:
        names = ["greedy_acc"] if self.evaluation.greedy else []
        n = self.evaluation.num_samples
        return names + (["pass@1", f"maj@{n}"] if n else [])

    @property
    def task(self) -> Task:
        return self.trainer.datamodule.task

    @property
    def engine(self) -> RolloutEngine:
        """The rollout callback's engine (``lit_vine.RolloutCallback``), else a private ``HFEngine``."""
        from lit_vine.callbacks.rollout import rollout_callback

        callback = rollout_callback(self._trainer)
        if callback is not None:
            return callback.engine_for(self)
        if self._own_engine is None:
            self._own_engine = HFEngine()
            self._own_engine.setup(self.policy, self.tokenizer)
        return self._own_engine

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (configs/strategies/fsdp.yaml): shard the trained models
        with FSDP2 over all processes (:meth:`shard_models`). Any other strategy: nothing."""
        if self.device_mesh is not None and not is_sharded(self.policy):
            self.shard_models(all_ranks_mesh(self.device_mesh))

    def trained_models(self) -> list[torch.nn.Module]:
        return [self.policy]

    def shard_models(self, mesh) -> None:
        """Each trained model its own FSDP2 root, gathered in the compute dtype with fp32 masters
        kept sharded. ``*-true`` precision casts the masters themselves, before sharding."""
        dtype = compute_dtype(self.trainer.precision)
        cast = str(self.trainer.precision).endswith("-true") and dtype != torch.float32
        for model in self.trained_models():
            if cast:
                model.to(dtype)
            shard(model, mesh, param_dtype=None if cast else dtype)

    # A strategy or precision plugin that cast the module (bf16-true, DeepSpeed) cast the RoPE
    # frequencies with it: they go back to fp32 before anything runs (lit_vine.devices).
    def on_fit_start(self) -> None:
        keep_rope_in_float32(self)

    def on_validation_start(self) -> None:
        keep_rope_in_float32(self)

    def on_test_start(self) -> None:
        keep_rope_in_float32(self)

    def derived_seed(self, purpose: str) -> int:
        """A seed for one use in one iteration on one rank, stable across restarts."""
        key = f"{self.seed}/{self.current_epoch}/{self.global_rank}/{purpose}"
        return zlib.crc32(key.encode())

    def encode_prompt(self, problem: Problem) -> list[int]:
        """The prompt's ids, cut from the left (with a warning) if it leaves no room for
        ``max_new_tokens`` in the policy's context (``lit_vine.faults.fit_prompt``)."""
        ids = self.task.prompt_ids(problem, self.tokenizer)
        limit = None if self.context_length is None else self.context_length - self.max_new_tokens
        return fit_prompt(ids, problem.id, limit, self.tokenizer.bos_token_id, self._long_prompt_ids)

    def evaluate_problems(self, problems: list[Problem], seed: int) -> list[dict]:
        prompts = [self.encode_prompt(p) for p in problems]
        return evaluate(problems, prompts, self.task, self.engine, self.tokenizer, self.evaluation, self.max_new_tokens, seed)

    # Lightning evaluation loops: one batch is a list of problems.
    def validation_step(self, batch: list[Problem], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def test_step(self, batch: list[Problem], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def _eval_step(self, batch: list[Problem], batch_idx: int) -> None:
        records = self.evaluate_problems(batch, seed=zlib.crc32(f"{self.seed}/eval/{batch_idx}".encode()))
        for rec in records:
            for name, metric in self.eval_metrics.items():
                metric.update(rec["greedy_correct" if name == "greedy_acc" else name])
        self._records += records

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    def _end_eval(self, stage: str) -> None:
        for name, metric in self.eval_metrics.items():
            # compute() already reduces over processes; sync_dist only averages identical values
            # (and keeps Lightning from warning that the epoch-level value is rank 0's alone).
            self.log(f"{stage}/{name}", metric.compute(), sync_dist=True)
            metric.reset()
        records, self._records = gather_records(self._records), []
        log_dir = self.trainer.log_dir  # a broadcast under DDP: every rank must ask, not only rank 0
        if self.trainer.is_global_zero and log_dir and not self.trainer.sanity_checking:
            folder = os.path.join(log_dir, "predictions")
            write_jsonl(os.path.join(folder, f"{stage}_iter{self.current_epoch:04d}.jsonl"), records)



def gather_records(records: list[dict]) -> list[dict]:
    if not (dist.is_available() and dist.is_initialized()):
        return records
    shards: list[list[dict]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(shards, records)
    return [r for shard in shards for r in shard]


def write_jsonl(path: str, records: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
