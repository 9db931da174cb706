"""The RL LightningModule: PPO-style updates on experience made by a pluggable algorithm."""

from __future__ import annotations

import copy
import time
from typing import Literal

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lit_vine.advantages import masked_mean, whiten
from lit_vine.algorithms import Algorithm, RolloutContext, VinePPO
from lit_vine.evaluation import EvalConfig
from lit_vine.experience import Experience, Rollouts, pad_batch, position_ids
from lit_vine.losses import (
    Aggregation,
    KLEstimator,
    aggregate,
    adaptive_kl_coef,
    dpo_positive_loss,
    kl_estimate,
    ppo_policy_loss,
    token_logprobs,
    value_loss,
)
from lit_vine.models import TinyConfig, ValueModel, enable_activation_checkpointing
from lit_vine.errors import check
from lit_vine import checkpointing
from lit_vine.faults import UpdateGuard, check_responses
from lit_vine.policy_module import PolicyModule
from lit_vine.rollout.engine import RolloutEngine, SamplingParams
from lit_vine.tasks.base import Problem


class RLModule(PolicyModule):
    """Policy, frozen reference and (if the algorithm needs one) critic, trained with the clipped
    PPO objective on mini-batches of experience. How advantages are made is ``algorithm``'s job.

    Args:
        policy: SFT checkpoint folder or hub name to start from (also the reference and critic init).
        algorithm: advantage estimator, e.g. ``VinePPO`` or ``PPO``.
        engine: rollout engine (``HFEngine`` everywhere, ``VLLMEngine`` on GPUs).
        responses_per_prompt: G responses sampled per prompt per iteration.
        temperature, top_p, max_new_tokens: training sampling (paper: 0.6, 0.9).
        learning_rate, critic_learning_rate, weight_decay: AdamW settings.
        warmup_steps: linear learning-rate warmup over the first optimizer steps; keeps a fresh
            Adam's full-size first steps from knocking the SFT policy off its optimum.
        ppo_epochs: passes over each iteration's experience (paper: 2).
        mini_batch_size: episodes per optimizer step (paper: 64).
        micro_batch_size: episodes per forward/backward; gradients accumulate to a mini-batch.
        clip_low, clip_high: ratio clip range [1 - clip_low, 1 + clip_high] (paper: 0.2, 0.2).
        value_clip: critic value clip.
        kl_coef, kl_in, kl_estimator: KL to the reference, in the loss (paper: k3, 1e-4) or
            subtracted from the reward (usually k1).
        kl_target, kl_horizon: set ``kl_target`` (per-response KL) to adapt ``kl_coef`` after every
            iteration (Ziegler et al. 2019); ``None`` keeps it fixed.
        whiten_advantages: whiten advantages over the whole batch (pooled across ranks).
        loss_aggregation: ``token_mean`` or ``seq_mean``.
        entropy_coef: entropy bonus weight.
        max_grad_norm: gradient clipping.
        max_consecutive_nonfinite: an update whose loss or gradient is NaN/inf is skipped (counted in
            ``train/skipped_updates``); this many in a row for one model stop the run.
        max_mean_ratio: a PPO mini-batch whose mean importance ratio exceeds this is skipped (a
            policy that drifted far from the one that sampled); ``None``: no bound.
        gradient_checkpointing: recompute the policy's and critic's activations during backward
            instead of keeping them: less memory for long responses and large models, for about
            one extra forward pass per update. Same gradients.
    """

    def __init__(
        self,
        policy: str = "checkpoints/sft-arith",
        algorithm: Algorithm | None = None,
        engine: RolloutEngine | None = None,
        responses_per_prompt: int = 8,
        temperature: float = 0.6,
        top_p: float = 0.9,
        max_new_tokens: int = 64,
        learning_rate: float = 1e-6,
        critic_learning_rate: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        ppo_epochs: int = 2,
        mini_batch_size: int = 64,
        micro_batch_size: int = 16,
        clip_low: float = 0.2,
        clip_high: float = 0.2,
        value_clip: float = 0.2,
        kl_coef: float = 1e-4,
        kl_in: Literal["loss", "reward"] = "loss",
        kl_estimator: KLEstimator = "k3",
        kl_target: float | None = None,
        kl_horizon: int = 10000,
        whiten_advantages: bool = True,
        loss_aggregation: Aggregation = "token_mean",
        entropy_coef: float = 0.0,
        max_grad_norm: float = 1.0,
        evaluation: EvalConfig = EvalConfig(),
        tiny: TinyConfig = TinyConfig(),
        seed: int = 0,
        max_consecutive_nonfinite: int = 3,
        max_mean_ratio: float | None = 5.0,
        gradient_checkpointing: bool = False,
    ) -> None:
        check(responses_per_prompt >= 1, f"responses_per_prompt must be >= 1, got {responses_per_prompt}")
        check(learning_rate > 0, f"learning_rate must be > 0, got {learning_rate}")
        check(critic_learning_rate > 0, f"critic_learning_rate must be > 0, got {critic_learning_rate}")
        check(ppo_epochs >= 1, f"ppo_epochs must be >= 1, got {ppo_epochs}")
        check(warmup_steps >= 0, f"warmup_steps must be >= 0, got {warmup_steps}")
        check(mini_batch_size >= 1 and micro_batch_size >= 1, "mini_batch_size and micro_batch_size must be >= 1")
        check(0 <= clip_low < 1 and clip_high >= 0, f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
        check(kl_coef >= 0, f"kl_coef must be >= 0, got {kl_coef}")
        check(kl_target is None or kl_target > 0, f"kl_target must be > 0 or null, got {kl_target}")
        check(kl_horizon >= 1, f"kl_horizon must be >= 1, got {kl_horizon}")
        check(kl_in in ("loss", "reward"), f"kl_in must be 'loss' or 'reward', got {kl_in!r}")
        check(kl_estimator in ("k1", "k2", "k3"), f"kl_estimator must be 'k1', 'k2' or 'k3', got {kl_estimator!r}")
        check(max_consecutive_nonfinite >= 1, f"max_consecutive_nonfinite must be >= 1, got {max_consecutive_nonfinite}")
        check(max_mean_ratio is None or max_mean_ratio > 1, f"max_mean_ratio must be > 1 or null, got {max_mean_ratio}")
        check(temperature > 0, f"temperature must be > 0 for training rollouts, got {temperature}")
        super().__init__(policy, engine, max_new_tokens, evaluation, tiny, seed)
        self.save_hyperparameters(ignore=["algorithm", "engine"])
        self.automatic_optimization = False
        self.algorithm = algorithm or VinePPO()
        self.sampling = SamplingParams(temperature, top_p, max_new_tokens)
        self.reference = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.critic = ValueModel(policy, tiny) if self.algorithm.uses_critic else None
        if gradient_checkpointing:  # the frozen reference never runs backward: it keeps plain forwards
            enable_activation_checkpointing(self.policy)
            if self.critic is not None:
                enable_activation_checkpointing(self.critic.body)
        # The PPO family scores tokens at the sampling temperature (design notes, sec. 1);
        # RestEM's NLL and DPO+ are likelihood objectives at temperature 1.
        self.score_temperature = temperature if self.algorithm.objective == "ppo" else 1.0
        self.kl_coef = kl_coef  # adapted when kl_target is set
        self.value_pretraining = {"active": self.algorithm.value_pretrain_iterations > 0, "best_ev": float("-inf"), "stale": 0}
        self._stats: dict[str, float] = {}
        self._samples: list[str] = []
        self.update_guard = UpdateGuard(max_consecutive_nonfinite, max_mean_ratio)
        self._experience: Experience | None = None  # this iteration's, kept for a mid-iteration checkpoint
        self._resume, self._restored = None, False

    # ----- experience ---------------------------------------------------------------------------
    def _per_micro_batch(self, fn, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``fn(ids, mask)`` over micro-batches of rows, concatenated: bounds activation memory."""
        size = self.hparams.micro_batch_size
        return torch.cat([fn(ids, mask) for ids, mask in zip(input_ids.split(size), attention_mask.split(size))])

    @torch.no_grad()
    def sequence_logprobs(self, model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, T: int) -> Tensor:
        """Temperature-scaled log-probs ``(B, T)`` of the last ``T`` tokens."""

        def logprobs(ids: Tensor, mask: Tensor) -> Tensor:
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -T - 1 : -1]
            return token_logprobs(logits / self.score_temperature, ids[:, -T:])[0]

        return self._per_micro_batch(logprobs, input_ids, attention_mask)

    @torch.no_grad()
    def critic_values(self, input_ids: Tensor, attention_mask: Tensor, T: int) -> Tensor:
        """V(s_t) ``(B, T)`` for the state before each response token."""
        return self._per_micro_batch(lambda ids, mask: self.critic(ids, mask, position_ids(mask))[:, -T - 1 : -1], input_ids, attention_mask)

    def make_experience(self, problems: list[Problem]) -> Experience:
        """One iteration's rollout: generate -> reward -> log-probs -> advantages."""
        hp, G = self.hparams, self.hparams.responses_per_prompt
        start = time.perf_counter()
        prompts = [self.encode_prompt(p) for p in problems]
        sampled = self.engine.generate(prompts, self.sampling.with_(n=G), seed=self.derived_seed("rollout"))
        episodes = [(i, ids) for i, group in enumerate(sampled) for ids in group]
        scored = [self.task.score(ids, problems[i], self.tokenizer) for i, ids in episodes]
        generation_time = time.perf_counter() - start

        device = self.device
        input_ids, attention_mask, response_mask = (
            x.to(device) for x in pad_batch([prompts[i] for i, _ in episodes], [ids for _, ids in episodes], self.tokenizer.pad_token_id)
        )
        T = response_mask.shape[1]
        old_logprobs = self.sequence_logprobs(self.policy, input_ids, attention_mask, T)
        ref_logprobs = self.sequence_logprobs(self.reference, input_ids, attention_mask, T)
        values = self.critic_values(input_ids, attention_mask, T) * response_mask if self.critic is not None else None

        scores = torch.tensor([reward for _, reward in scored], device=device)
        lengths = response_mask.sum(-1).long()
        token_rewards = torch.zeros_like(response_mask)
        token_rewards[torch.arange(len(lengths)), lengths - 1] = scores
        kl = kl_estimate(old_logprobs, ref_logprobs, hp.kl_estimator) * response_mask
        if hp.kl_in == "reward":
            token_rewards = token_rewards - self.kl_coef * kl

        rollouts = Rollouts(
            problems=[problems[i] for i, _ in episodes],
            group=torch.tensor([i for i, _ in episodes]),
            prompt_ids=[prompts[i] for i, _ in episodes],
            response_ids=[ids for _, ids in episodes],
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
        ctx = RolloutContext(self.engine, self.tokenizer, self.task, self.sampling, self.derived_seed("values"))
        advantages, returns = self.algorithm.advantages(rollouts, ctx)
        raw_advantages = advantages
        if hp.whiten_advantages and self.algorithm.objective == "ppo":
            advantages = whiten(advantages, response_mask)

        finished = torch.tensor([bool(ids) and ids[-1] == self.tokenizer.eos_token_id for _, ids in episodes], dtype=torch.float)
        self._stats = {
            "rollout/reward": float(scores.mean()),
            "rollout/finished": float(finished.mean()),
            "rollout/response_length": float(lengths.float().mean()),
            "rollout/kl_ref": float(masked_mean(kl, response_mask)),
            "rollout/kl_coef": self.kl_coef,
            "advantages/mean": float(masked_mean(raw_advantages, response_mask)),
            "advantages/std": float(masked_mean(raw_advantages**2, response_mask).sqrt()),
            "advantages/abs_mean": float(masked_mean(raw_advantages.abs(), response_mask)),
            "time/generation": generation_time,
            **ctx.stats,
        }
        self._stats.update(check_responses([ids for _, ids in episodes], self.tokenizer.eos_token_id, hp.max_new_tokens, self.current_epoch))
        if values is not None:
            self._stats["critic/value_mean"] = float(masked_mean(values, response_mask))
            self._update_value_pretraining(values, returns, response_mask)
        self._samples = [f"**prompt** {problems[i].question}\n\n**response** {text}\n\n**reward** {r}" for (i, _), (text, r) in list(zip(episodes, scored))[:: max(1, len(episodes) // 4)]]
        self._iteration_start = start
        self.engine.sleep()  # generation is done until the next weight sync: give its memory to training

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
        )
        self._experience = experience.select(self._training_rows(rollouts, raw_advantages.cpu()))
        return self._experience

    def _training_rows(self, rollouts: Rollouts, advantages: Tensor) -> Tensor:
        """Episodes the objective trains on: all for PPO, the kept ones for RestEM, and
        (chosen, rejected) pairs side by side for DPO+."""
        if self.algorithm.objective == "nll":
            return (advantages != 0).any(-1).nonzero().flatten()
        if self.algorithm.objective == "dpo":
            pairs = self.algorithm.pairs(rollouts.scores.cpu(), rollouts.group)
            return torch.tensor([b for pair in pairs for b in pair], dtype=torch.long)
        return torch.arange(len(advantages))

    def _update_value_pretraining(self, values: Tensor, returns: Tensor, mask: Tensor) -> None:
        """VC-PPO: pretrain the critic until its explained variance on fresh rollouts stops improving."""
        residual_var = masked_mean((returns - values) ** 2, mask) - masked_mean(returns - values, mask) ** 2
        returns_var = masked_mean(returns**2, mask) - masked_mean(returns, mask) ** 2
        ev = float(1 - residual_var / returns_var.clamp(min=1e-8))
        self._stats["critic/explained_variance"] = ev
        state = self.value_pretraining
        if state["active"]:
            if ev > state["best_ev"]:
                state["best_ev"], state["stale"] = ev, 0
            else:
                state["stale"] += 1
            if state["stale"] >= self.algorithm.value_pretrain_patience or self.current_epoch >= self.algorithm.value_pretrain_iterations:
                state["active"] = False
        self._stats["critic/value_pretraining"] = float(state["active"])

    # ----- training -----------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        optimizers = [torch.optim.AdamW(self.policy.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)]
        if self.critic is not None:
            optimizers.append(torch.optim.AdamW(self.critic.parameters(), lr=hp.critic_learning_rate, weight_decay=hp.weight_decay))
        warmup = lambda step: min(1.0, (step + 1) / hp.warmup_steps) if hp.warmup_steps else 1.0  # noqa: E731
        return optimizers, [torch.optim.lr_scheduler.LambdaLR(opt, warmup) for opt in optimizers]

    def _micro_batches(self, batch: Experience):
        """Micro-batches with the weight that makes their summed losses equal the mini-batch loss."""
        hp = self.hparams
        tokens, rows = batch.response_mask.sum(), len(batch)
        size = hp.micro_batch_size
        if self.algorithm.objective == "dpo":  # keep (chosen, rejected) pairs in one micro-batch
            size = max(2, size - size % 2)
        for idx in torch.arange(rows, device=batch.input_ids.device).split(size):
            micro = batch.select(idx)
            by_tokens = hp.loss_aggregation == "token_mean" and self.algorithm.objective != "dpo"
            weight = micro.response_mask.sum() / tokens if by_tokens else len(idx) / rows
            yield micro, weight

    def training_step(self, batch: Experience, batch_idx: int) -> None:
        optimizers = self.optimizers()
        policy_opt, critic_opt = optimizers if isinstance(optimizers, list) else (optimizers, None)
        logs: dict[str, Tensor] = {}

        def add(name: str, value: Tensor, weight) -> None:
            logs[name] = logs.get(name, 0.0) + value.detach() * weight

        if not self.value_pretraining["active"]:
            for micro, weight in self._micro_batches(batch):
                loss, stats = self._policy_loss(micro)
                self.manual_backward(loss * weight)
                for name, value in stats.items():
                    add(f"train/{name}", value, weight)
            logs["train/policy_grad_norm"] = self._step(policy_opt, self.policy, "policy", batch_idx, logs.get("train/policy_loss"), logs.get("train/ratio"))

        if critic_opt is not None:
            hp = self.hparams
            for micro, weight in self._micro_batches(batch):
                values = self.critic(micro.input_ids, micro.attention_mask, position_ids(micro.attention_mask))
                values = values[:, micro.prompt_width - 1 : -1]
                v_loss, v_stats = value_loss(values, micro.old_values, micro.returns, micro.response_mask, hp.value_clip, hp.loss_aggregation)
                self.manual_backward(v_loss * weight)
                add("train/value_loss", v_loss, weight)
                add("train/value_clip_frac", v_stats["value_clip_frac"], weight)
            logs["train/critic_grad_norm"] = self._step(critic_opt, self.critic, "critic", batch_idx, logs.get("train/value_loss"))

        logs["train/skipped_updates"] = torch.tensor(float(self.update_guard.skipped))
        logs["train/learning_rate"] = torch.tensor(policy_opt.param_groups[0]["lr"])
        self.log_dict(logs, prog_bar=False)
        self.log("iteration", float(self.current_epoch), prog_bar=True)

    def _policy_loss(self, micro: Experience) -> tuple[Tensor, dict[str, Tensor]]:
        """The algorithm's objective on one micro-batch, plus KL and entropy terms."""
        hp = self.hparams
        P, mask = micro.prompt_width, micro.response_mask
        logits = self.policy(
            input_ids=micro.input_ids, attention_mask=micro.attention_mask, position_ids=position_ids(micro.attention_mask)
        ).logits[:, P - 1 : -1]
        logprobs, entropy = token_logprobs(logits / self.score_temperature, micro.input_ids[:, P:])
        objective = self.algorithm.objective
        if objective == "ppo":
            loss, stats = ppo_policy_loss(logprobs, micro.old_logprobs, micro.advantages, mask, hp.clip_low, hp.clip_high, hp.loss_aggregation)
        elif objective == "nll":
            loss, stats = aggregate(-logprobs * micro.advantages, mask, hp.loss_aggregation), {}
        else:  # dpo: rows are (chosen, rejected) pairs
            seq, ref = (logprobs * mask).sum(-1), (micro.ref_logprobs * mask).sum(-1)
            loss, stats = dpo_positive_loss(seq[0::2], seq[1::2], ref[0::2], ref[1::2], self.algorithm.beta, self.algorithm.lambda_dpop)
        stats["policy_loss"] = loss.detach()
        kl = aggregate(kl_estimate(logprobs, micro.ref_logprobs, hp.kl_estimator), mask, hp.loss_aggregation)
        ent = aggregate(entropy, mask, hp.loss_aggregation)
        loss = loss - hp.entropy_coef * ent
        if hp.kl_in == "loss" and objective == "ppo":
            loss = loss + self.kl_coef * kl
        return loss, {**stats, "kl_ref": kl.detach(), "entropy": ent.detach()}

    def _step(self, optimizer, model: torch.nn.Module, name: str = "policy", batch_idx: int = 0, loss: Tensor | None = None, ratio: Tensor | None = None) -> Tensor:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.hparams.max_grad_norm)
        # A non-finite loss or gradient, or a ratio explosion, skips the update (faults.UpdateGuard);
        # every process takes the same decision.
        reason = self.update_guard.reason_to_skip(name, None if loss is None else float(loss), float(norm), None if ratio is None else float(ratio))
        if self.trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
            optimizer.zero_grad(set_to_none=True)
            self.update_guard.record(name, reason or "another process skipped this update", self.current_epoch, batch_idx)
            return norm.detach()
        self.update_guard.record(name, None, self.current_epoch, batch_idx)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        schedulers[0 if name == "policy" else 1].step()
        return norm.detach()

    def on_train_epoch_end(self) -> None:
        """One RL iteration is over: log its statistics and hand the new weights to the engine."""
        self._stats["time/iteration"] = time.perf_counter() - self._iteration_start
        self._stats["time/training"] = self._stats["time/iteration"] - self._stats["time/generation"] - self._stats.get("time/value_estimation", 0.0)
        self.log_dict(self._stats, sync_dist=True, prog_bar=False)
        if self.hparams.kl_target is not None:
            sequence_kl = self._stats["rollout/kl_ref"] * self._stats["rollout/response_length"]
            episodes = self.trainer.datamodule.prompts_per_iteration * self.hparams.responses_per_prompt
            self.kl_coef = adaptive_kl_coef(self.kl_coef, sequence_kl, self.hparams.kl_target, self.hparams.kl_horizon, episodes)
        self.log("reward", self._stats["rollout/reward"], prog_bar=True, sync_dist=True)
        if isinstance(self.logger, TensorBoardLogger) and self.trainer.is_global_zero:
            self.logger.experiment.add_text("samples", "\n\n---\n\n".join(self._samples), self.current_epoch)
        self.engine.sync_weights(self.policy)
        engine_metrics = self.engine.metrics()  # e.g. the vLLM weight-sync probe
        if engine_metrics:
            self.log_dict(engine_metrics, sync_dist=True, reduce_fx="max")

    # ----- checkpoints (lit_vine/checkpointing.py, docs/robustness.md) -----------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpointing.save_run_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpointing.load_run_state(self, checkpoint)

    def take_resumed_experience(self) -> tuple[Experience, int] | None:
        """The interrupted iteration's experience and mini-batches done, once after a mid-iteration resume."""
        return checkpointing.take_resumed_experience(self)

    def on_train_start(self) -> None:
        if self._restored:  # the engine samples from the restored weights (vLLM holds its own copy)
            self.engine.sync_weights(self.policy)
