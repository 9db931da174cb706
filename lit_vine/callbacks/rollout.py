"""The rollout callback: owns the rollout engine and makes every RL iteration's experience."""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from lit_vine.advantages import masked_mean, whiten
from lit_vine.algorithms import RolloutContext
from lit_vine.blame import blame_statistics
from lit_vine.checkpointing import mid_iteration, rng_state, set_rng_state
from lit_vine.devices import FLOAT, peak_memory_gib, precision_context, reset_peak_memory
from lit_vine.distributed import agreed_max, all_gather_objects, pooled_stats
from lit_vine.errors import ConfigError
from lit_vine.experience import Experience, Rollouts, pad_batch
from lit_vine.faults import check_responses
from lit_vine.rollout.engine import HFEngine, RolloutEngine

CHECKPOINT_KEY = "lit_vine_rollouts"


class RolloutCallback(Callback):
    """Samples with the rollout engine and turns each RL iteration's samples into experience.

    One Lightning epoch is one RL iteration. At its start this callback samples
    ``responses_per_prompt`` responses to the iteration's prompts, scores them with the task, has
    the LightningModule score their tokens (old and reference log-probs, critic values), lets the
    module's algorithm turn them into advantages (VinePPO's MC rollouts use this engine too) and
    loads the experience into the DataModule's stream; the engine then sleeps while the trainer
    trains (vLLM sleep mode), and gets the new weights before anything samples again (validation
    or the next iteration). Validation and test sample with the same engine
    (``PolicyModule.engine``). All of it runs in the trainer's precision context, like the loss.
    Configured under ``trainer.callbacks``::

        callbacks:
          - class_path: lit_vine.RolloutCallback
            init_args:
              engine: {class_path: lit_vine.rollout.vllm.VLLMEngine, init_args: {dtype: float32}}

    An ``RLModule`` trained without one gets ``RolloutCallback()`` (``HFEngine``).

    With several processes every rank makes its share of the iteration, statistics are pooled
    before they are logged (every rank logs the same keys) and every rank trains on as many rows
    (``lit_vine.distributed``).

    Args:
        engine: ``HFEngine`` (default; transformers, everywhere) or ``VLLMEngine``.
    """

    def __init__(self, engine: RolloutEngine | None = None) -> None:
        self.engine = engine or HFEngine()
        self._policy = None  # the policy object the engine was set up with
        self._stale = False  # the policy changed since the engine last got its weights
        self._stats: dict[str, float] = {}
        self._samples: list[str] = []
        self._experience: Experience | None = None  # this iteration's, kept for a mid-iteration checkpoint
        self._start = 0.0
        self._resumed: dict[str, Any] | None = None
        self._restored = False

    # ----- lifecycle -----------------------------------------------------------------------------
    def engine_for(self, pl_module: LightningModule) -> RolloutEngine:
        """The engine, set up with the module's policy as it is now: a strategy (FSDP) may have
        wrapped it since the last use, and the engine must gather through the wrapper."""
        if self._policy is not pl_module.policy:
            self.engine.setup(pl_module.policy, pl_module.tokenizer)
            self._policy = pl_module.policy
        return self.engine

    def sync_engine(self, pl_module: LightningModule) -> None:
        """Hand the policy's current weights to the engine if it holds older ones (vLLM keeps a
        copy; ``HFEngine`` samples from the live policy and has nothing to do)."""
        if self._stale:
            synced = time.perf_counter()
            self.engine_for(pl_module).sync_weights(pl_module.policy)
            self._stats["time/weight_sync"] = self._stats.get("time/weight_sync", 0.0) + time.perf_counter() - synced
            self._stale = False

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.engine.close()
        self._policy = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._restored:  # the engine samples from the restored weights (vLLM holds its own copy)
            self._stale = True
            self.sync_engine(pl_module)
        if self._resumed is not None:
            # A mid-iteration resume: Lightning does not start that epoch again, so the saved
            # experience goes to the stream here. Creating the epoch's DataLoader iterator drew from
            # the global RNG, which the uninterrupted run had drawn before the checkpoint: set it again.
            state, self._resumed = self._resumed, None
            self._experience = Experience(**state["experience"])
            self._stats, self._samples = dict(state["stats"]), list(state["samples"])
            self._start = time.perf_counter()
            trainer.datamodule.stream.load(self._experience, skip=state["mini_batches_done"])
            set_rng_state(state["rng"])

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.datamodule.stream.loaded:
            self._start = time.perf_counter()
            self._experience = self.make_experience(trainer, pl_module)
            trainer.datamodule.stream.load(self._experience)
            reset_peak_memory(pl_module.device)  # what follows is training

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._stale = True

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit":  # validation inside fit runs before the iteration's end: it must see the new weights
            self._stats.setdefault("memory/training_gib", peak_memory_gib(pl_module.device))
            self.sync_engine(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The iteration is over: hand the new weights to the engine and log the iteration's
        statistics; ``time/iteration`` runs from the iteration's first prompt to here."""
        stats = self._stats
        stats.setdefault("memory/training_gib", peak_memory_gib(pl_module.device))
        self.sync_engine(pl_module)
        pl_module.update_kl_coef(stats["rollout/kl_ref"] * stats["rollout/response_length"])
        if isinstance(pl_module.logger, TensorBoardLogger) and trainer.is_global_zero:
            pl_module.logger.experiment.add_text("samples", "\n\n---\n\n".join(self._samples), trainer.current_epoch)
        engine_metrics = self.engine.metrics()  # e.g. the vLLM weight-sync probe
        if engine_metrics:
            pl_module.log_dict(engine_metrics, sync_dist=True, reduce_fx="max")
        stats["time/iteration"] = time.perf_counter() - self._start
        stats["time/training"] = stats["time/iteration"] - sum(stats.get(f"time/{k}", 0.0) for k in ("generation", "scoring", "value_estimation", "weight_sync"))
        # pooled already (every rank holds the same values): logged without a collective
        pl_module.log_dict(stats, prog_bar=False)
        pl_module.log("reward", stats["rollout/reward"], prog_bar=True)

    # ----- one iteration's experience -------------------------------------------------------------
    def make_experience(self, trainer: Trainer, module: LightningModule) -> Experience:
        """Generate -> reward -> log-probs (and values) -> advantages, for this rank's prompts, in the
        trainer's precision context (``lit_vine.devices``)."""
        with precision_context(trainer):
            return self._make_experience(trainer, module)

    def _make_experience(self, trainer: Trainer, module: LightningModule) -> Experience:
        hp, task, tokenizer, device = module.hparams, trainer.datamodule.task, module.tokenizer, module.device
        problems = trainer.datamodule.iteration_problems(trainer.current_epoch, trainer.global_rank, trainer.world_size)
        start = time.perf_counter()
        reset_peak_memory(device)
        prompts = [module.encode_prompt(p) for p in problems]
        engine = self.engine_for(module)
        params = module.sampling.with_(n=hp.responses_per_prompt, logprobs=module.sampler_logprobs)
        ctx = RolloutContext(engine, tokenizer, task, module.sampling, module.derived_seed("values"))
        episodes = module.algorithm.sample(prompts, problems, params, ctx, seed=module.derived_seed("rollout"))
        to_grade = [e for e in episodes if e.reward is None]  # a tree's edges come valued
        graded = iter(task.score_many([(e.response_ids, problems[e.problem]) for e in to_grade], tokenizer))
        scored = [next(graded) if e.reward is None else (tokenizer.decode(e.response_ids, skip_special_tokens=True), e.reward) for e in episodes]
        generated = time.perf_counter()
        memory = {"memory/generation_gib": peak_memory_gib(device)}

        reset_peak_memory(device)
        input_ids, attention_mask, response_mask = (
            x.to(device) for x in pad_batch([e.prompt_ids for e in episodes], [e.response_ids for e in episodes], tokenizer.pad_token_id)
        )
        sampler_logprobs = [getattr(e.response_ids, "logprobs", None) for e in episodes]
        old_logprobs, ref_logprobs, values = module.score_tokens(input_ids, attention_mask, response_mask, sampler_logprobs)
        scores = torch.tensor([reward for _, reward in scored], dtype=FLOAT, device=device)
        lengths = response_mask.sum(-1).long()
        token_rewards = torch.zeros_like(response_mask)
        token_rewards[torch.arange(len(lengths), device=device), lengths - 1] = scores
        kl = module.kl_tokens(old_logprobs, ref_logprobs) * response_mask
        if hp.kl_in == "reward":
            token_rewards = token_rewards - module.kl_coef * kl
        rollouts = Rollouts(
            problems=[problems[e.problem] for e in episodes],
            group=torch.tensor([e.problem for e in episodes], device=device),
            prompt_ids=[e.prompt_ids for e in episodes],
            response_ids=[e.response_ids for e in episodes],
            texts=[text for text, _ in scored],
            scores=scores,
            input_ids=input_ids,
            attention_mask=attention_mask,
            response_mask=response_mask,
            old_logprobs=old_logprobs,
            ref_logprobs=ref_logprobs,
            token_rewards=token_rewards,
            values=values,
        )
        scored_at = time.perf_counter()
        memory["memory/scoring_gib"] = peak_memory_gib(device)

        reset_peak_memory(device)
        raw_advantages, returns = module.algorithm.advantages(rollouts, ctx)
        policy_mask = module.algorithm.policy_mask(rollouts)
        advantages = whiten(raw_advantages, response_mask if policy_mask is None else policy_mask) if module.whitening == "batch" else raw_advantages
        memory["memory/advantages_gib"] = peak_memory_gib(device)
        engine.sleep()  # generation is done until the next weight sync: give its memory to training

        finished = [bool(e.response_ids) and e.response_ids[-1] == tokenizer.eos_token_id for e in episodes]
        stats = {
            "rollout/reward": float(scores.mean()),
            "rollout/finished": sum(finished) / len(finished),
            "rollout/response_length": float(lengths.float().mean()),
            "rollout/kl_ref": float(masked_mean(kl, response_mask)),
            "rollout/kl_coef": module.kl_coef,
            "advantages/mean": float(masked_mean(raw_advantages, response_mask)),
            "advantages/std": float(masked_mean(raw_advantages**2, response_mask).sqrt()),
            "advantages/abs_mean": float(masked_mean(raw_advantages.abs(), response_mask)),
            "time/generation": generated - start,
            "time/scoring": scored_at - generated,
            **memory,
            **ctx.stats,
        }
        if module.algorithm.whole_responses:
            stats.update(check_responses([e.response_ids for e in episodes], tokenizer.eos_token_id, hp.max_new_tokens, trainer.current_epoch))
        if task.checks_steps and module.algorithm.whole_responses:  # does the estimator blame the step that went wrong? (lit_vine.blame)
            stats.update(blame_statistics(rollouts.problems, rollouts.response_ids, rollouts.texts, scores, raw_advantages, task, tokenizer))
        if values is not None:
            stats.update(module.update_value_pretraining(values, returns, response_mask))
        self._stats = pooled_stats(stats, weights={"blame/": "blame/failed_responses"})
        self._samples = [
            f"**prompt** {problems[e.problem].question}\n\n**response** {text}\n\n**reward** {r}"
            for e, (text, r) in list(zip(episodes, scored))[:: max(1, len(episodes) // 4)]
        ]
        zeros = torch.zeros_like(response_mask)
        experience = Experience(
            input_ids=input_ids.cpu(),
            attention_mask=attention_mask.cpu(),
            response_mask=response_mask.cpu(),
            old_logprobs=old_logprobs.cpu(),
            ref_logprobs=ref_logprobs.cpu(),
            advantages=advantages.cpu(),
            returns=(returns if returns is not None else zeros).cpu(),
            old_values=(values if values is not None else zeros).cpu(),
            policy_mask=None if policy_mask is None else policy_mask.cpu(),
        )
        kept = experience.select(module.algorithm.training_rows(rollouts, raw_advantages))
        # Every rank trains on as many rows, so that all run the same forwards, backwards and
        # gradient reductions (RestEM, DPO+ and SPO-tree keep different numbers on each rank).
        return kept.padded_to(agreed_max(len(kept)), filler=experience)

    # ----- checkpoints (docs/robustness.md) --------------------------------------------------------
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        state: dict[str, Any] = {}
        engine_state = getattr(self.engine, "state_dict", None)
        if callable(engine_state):
            state["engine"] = engine_state()
        done = mid_iteration(trainer)
        if done and self._experience is not None:  # written inside an iteration (SIGTERM / Ctrl+C)
            # Every rank's experience and RNG: a resume must give each rank its own back. Every rank
            # writes the checkpoint's dict (only rank 0's reaches the file), so every rank gathers.
            state["in_iteration"] = {
                "mini_batches_done": done,
                "stats": dict(self._stats),
                "samples": list(self._samples),
                "ranks": all_gather_objects({
                    "experience": {f.name: getattr(self._experience, f.name) for f in fields(self._experience)},
                    "rng": rng_state(),
                }),
            }
        checkpoint[CHECKPOINT_KEY] = state

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CHECKPOINT_KEY, {})
        if "engine" in state and callable(getattr(self.engine, "load_state_dict", None)):
            self.engine.load_state_dict(state["engine"])
        resumed = state.get("in_iteration")
        if resumed is not None:
            ranks = resumed["ranks"]
            if len(ranks) != trainer.world_size:
                raise ConfigError(
                    f"this checkpoint was written inside an iteration by {len(ranks)} processes; resume it with as many "
                    f"(now {trainer.world_size}), or from a checkpoint written at an iteration's end"
                )
            resumed = {**resumed, **ranks[trainer.global_rank]}
        self._resumed = resumed
        self._restored = True


def rollout_callback(trainer: Trainer | None) -> RolloutCallback | None:
    """The trainer's rollout callback, if it has one."""
    callbacks = trainer.callbacks if trainer is not None else []
    return next((cb for cb in callbacks if isinstance(cb, RolloutCallback)), None)
