"""The RL LightningModule: PPO-style updates on experience made by a pluggable algorithm."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor

from lit_vine.advantages import whiten
from lit_vine.algorithms import Algorithm, VinePPO, Whitening
from lit_vine.evaluation import EvalConfig
from lit_vine.devices import compute_dtype, place_frozen
from lit_vine.distributed import agreed_max, pooled_sums, shard
from lit_vine.experience import Experience, MiniBatch, pad_rows, position_ids
from lit_vine.packing import pack, packing_works
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
from lit_vine.models import TinyConfig, ValueModel, enable_activation_checkpointing, head_only_at, load_frozen_copy
from lit_vine.errors import check
from lit_vine import checkpointing
from lit_vine.faults import UpdateGuard
from lit_vine.policy_module import PolicyModule
from lit_vine.rollout.engine import SamplingParams
from lit_vine.schedule import LRSchedule


class RLModule(PolicyModule):
    """Policy, frozen reference and (if the algorithm needs one) critic, trained with the clipped
    PPO objective on mini-batches of experience. How advantages are made is ``algorithm``'s job;
    the experience itself is made by ``lit_vine.RolloutCallback``, which owns the rollout engine.

    Args:
        policy: SFT checkpoint folder or hub name to start from (also the reference and critic init).
        algorithm: advantage estimator, e.g. ``VinePPO`` or ``PPO``.
        responses_per_prompt: G responses sampled per prompt per iteration.
        temperature, top_p, max_new_tokens: training sampling (paper: 0.6, 0.9).
        max_sequence_length: prompt + response (and prompt + MC state + continuation) at most this
            many tokens; a response cut there is unfinished (reward 0). ``None``: the model's context.
        learning_rate, critic_learning_rate, weight_decay: AdamW settings.
        lr_schedule: warmup and decay of both learning rates over the run's optimizer steps (the
            VinePPO reference: log warmup over 3 %, then linear decay to 0). A warmup keeps a fresh
            Adam's full-size first steps from knocking the SFT policy off its optimum.
        ppo_epochs: passes over each iteration's experience (paper: 2).
        mini_batch_size: episodes per optimizer step (paper: 64).
        micro_batch_size: episodes per forward/backward; gradients accumulate to a mini-batch.
        clip_low, clip_high: ratio clip range [1 - clip_low, 1 + clip_high] (paper: 0.2, 0.2).
        value_clip: critic value clip.
        kl_coef, kl_in, kl_estimator: KL to the reference, in the loss (paper: k3, 1e-4) or
            subtracted from the reward (usually k1).
        kl_aggregation: how the in-loss KL is reduced; ``None``: as ``loss_aggregation``. The
            VinePPO reference sums it over a response's tokens (``seq_sum``).
        kl_clip: per-token KL clamped to [-kl_clip, kl_clip] (the reference and verl: 10).
        log_ratio_clip: log-ratios to the old and the reference policy are clamped to this before
            ``exp``, so a far-drifted token cannot overflow to inf/NaN (verl: 20).
        dual_clip: dual-clip constant c > 1 for negative advantages (Ye et al. 2020; verl: 3);
            ``None``: plain PPO clipping, as in the VinePPO reference.
        kl_target, kl_horizon: set ``kl_target`` (per-response KL) to adapt ``kl_coef`` after every
            iteration (Ziegler et al. 2019); ``None`` keeps it fixed.
        whiten_advantages: ``batch`` (once per iteration), ``mini_batch`` (per PPO mini-batch, as the
            VinePPO reference) or ``none``, pooled across ranks; ``None``: the algorithm's own
            (docs/methods.md lists them).
        loss_aggregation: ``token_mean`` or ``seq_mean``.
        entropy_coef: entropy bonus weight.
        max_grad_norm: gradient clipping.
        max_consecutive_nonfinite: an update whose loss or gradient is NaN/inf is skipped (counted in
            ``train/skipped_updates``); this many in a row for one model stop the run.
        max_mean_ratio: a PPO mini-batch whose mean importance ratio exceeds this is skipped (a
            policy that drifted far from the one that sampled; the reference: 10); ``None``: no bound.
        gradient_checkpointing: recompute the policy's and critic's activations during backward
            instead of keeping them: less memory for long responses and large models, for about
            one extra forward pass per update. Same gradients.
        packing: run every scoring and training forward on the micro-batch's episodes laid end to
            end (``lit_vine.packing``) instead of padded to the longest: the same outputs, without
            the padding's share of the work. Checked once against the padded forward; a model
            whose attention ignores the episode boundaries falls back to padding, with a warning.
            fp32 only: in bf16, SDPA's blocked kernels make a packed episode's numbers depend on
            the episodes beside it (up to 5e-2 in a log-prob, measured on CPU), so the old policy's
            log-probs would not be the loss's; runs that compute in half precision pad.
        reuse_sampler_logprobs: PPO-family objectives take the old policy's log-probs from the
            rollout engine when it has them (``HFEngine``'s fork decoding scores every token it
            samples with the live policy) instead of a second forward over every episode. In fp32
            they equal that forward's within 1e-5 (tested); in bf16 a cached decode differs from a
            full forward by ~1e-2 in a log-prob, so under ``bf16-*`` precision the old log-probs
            are always recomputed with the loss's own forward (the first mini-batch's ratio is 1).
    """

    def __init__(
        self,
        policy: str = "checkpoints/sft-arith",
        algorithm: Algorithm | None = None,
        responses_per_prompt: int = 8,
        temperature: float = 0.6,
        top_p: float = 0.9,
        max_new_tokens: int = 64,
        max_sequence_length: int | None = None,
        learning_rate: float = 1e-6,
        critic_learning_rate: float = 1e-5,
        weight_decay: float = 0.0,
        lr_schedule: LRSchedule = LRSchedule(),
        ppo_epochs: int = 2,
        mini_batch_size: int = 64,
        micro_batch_size: int = 16,
        clip_low: float = 0.2,
        clip_high: float = 0.2,
        value_clip: float = 0.2,
        kl_coef: float = 1e-4,
        kl_in: Literal["loss", "reward"] = "loss",
        kl_estimator: KLEstimator = "k3",
        kl_aggregation: Aggregation | None = None,
        kl_clip: float | None = None,
        log_ratio_clip: float | None = 20.0,
        dual_clip: float | None = None,
        kl_target: float | None = None,
        kl_horizon: int = 10000,
        whiten_advantages: Whitening | None = None,
        loss_aggregation: Aggregation = "token_mean",
        entropy_coef: float = 0.0,
        max_grad_norm: float = 1.0,
        evaluation: EvalConfig = EvalConfig(),
        tiny: TinyConfig = TinyConfig(),
        seed: int = 0,
        max_consecutive_nonfinite: int = 3,
        max_mean_ratio: float | None = 10.0,
        gradient_checkpointing: bool = False,
        packing: bool = True,
        reuse_sampler_logprobs: bool = True,
    ) -> None:
        check(responses_per_prompt >= 1, f"responses_per_prompt must be >= 1, got {responses_per_prompt}")
        check(learning_rate > 0, f"learning_rate must be > 0, got {learning_rate}")
        check(critic_learning_rate > 0, f"critic_learning_rate must be > 0, got {critic_learning_rate}")
        check(ppo_epochs >= 1, f"ppo_epochs must be >= 1, got {ppo_epochs}")
        check(mini_batch_size >= 1 and micro_batch_size >= 1, "mini_batch_size and micro_batch_size must be >= 1")
        check(0 <= clip_low < 1 and clip_high >= 0, f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
        check(kl_coef >= 0, f"kl_coef must be >= 0, got {kl_coef}")
        check(kl_target is None or kl_target > 0, f"kl_target must be > 0 or null, got {kl_target}")
        check(kl_horizon >= 1, f"kl_horizon must be >= 1, got {kl_horizon}")
        check(kl_in in ("loss", "reward"), f"kl_in must be 'loss' or 'reward', got {kl_in!r}")
        check(kl_estimator in ("k1", "k2", "k3"), f"kl_estimator must be 'k1', 'k2' or 'k3', got {kl_estimator!r}")
        for name, value in (("kl_clip", kl_clip), ("log_ratio_clip", log_ratio_clip)):
            check(value is None or value > 0, f"{name} must be > 0 or null, got {value}")
        check(dual_clip is None or dual_clip > 1, f"dual_clip must be > 1 or null, got {dual_clip}")
        check(whiten_advantages in (None, "batch", "mini_batch", "none"),
              f"whiten_advantages must be 'batch', 'mini_batch', 'none' or null, got {whiten_advantages!r}")
        check(max_consecutive_nonfinite >= 1, f"max_consecutive_nonfinite must be >= 1, got {max_consecutive_nonfinite}")
        check(max_mean_ratio is None or max_mean_ratio > 1, f"max_mean_ratio must be > 1 or null, got {max_mean_ratio}")
        check(temperature > 0, f"temperature must be > 0 for training rollouts, got {temperature}")
        super().__init__(policy, max_new_tokens, evaluation, tiny, seed)
        self.save_hyperparameters(ignore=["algorithm"])
        self.lr_schedule = lr_schedule  # under LightningCLI, hparams hold it as a dict
        self.automatic_optimization = False
        self.algorithm = algorithm or VinePPO()
        need = self.algorithm.min_responses_per_prompt
        check(responses_per_prompt >= need,
              f"responses_per_prompt must be >= {need} for {type(self.algorithm).__name__} (it compares the responses to one prompt), got {responses_per_prompt}")
        self.whitening = (whiten_advantages or self.algorithm.whitening) if self.algorithm.objective == "ppo" else "none"
        check(max_sequence_length is None or max_sequence_length > 1, f"max_sequence_length must be > 1 or null, got {max_sequence_length}")
        self.sampling = SamplingParams(temperature, top_p, max_new_tokens, max_total_tokens=max_sequence_length)
        # The frozen reference sits outside the module tree: never trained, never checkpointed (a
        # fingerprint checks it on resume), and no strategy or precision plugin wraps or casts it;
        # setup() puts it on the device in the compute dtype (lit_vine.devices).
        object.__setattr__(self, "reference", load_frozen_copy(policy, self.policy))
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
        self.update_guard = UpdateGuard(max_consecutive_nonfinite, max_mean_ratio)
        self.policy_updates = 0  # policy optimizer steps taken (a critic's are not counted)
        self._can_pack = packing and packing_works(self.policy)  # the model keeps packed episodes apart
        self.packing = self._can_pack
        # only the PPO family scores at the sampling temperature, as the engine's log-probs are
        self.sampler_logprobs = reuse_sampler_logprobs and self.algorithm.objective == "ppo"

    def setup(self, stage: str) -> None:
        """The reference on this process's device in the compute dtype; the sampler's log-probs
        reused only where they equal the loss's forward (fp32)."""
        dtype = compute_dtype(self.trainer.precision)
        place_frozen(self.reference, self.trainer.strategy.root_device, dtype)
        exact = dtype == torch.float32  # where a cached decode and a packed forward equal the loss's forward
        self.sampler_logprobs = self.hparams.reuse_sampler_logprobs and self.algorithm.objective == "ppo" and exact
        self.packing = self._can_pack and exact

    def trained_models(self) -> list[torch.nn.Module]:
        return [self.policy] + ([self.critic] if self.critic is not None else [])

    def shard_models(self, mesh) -> None:
        """The policy, the critic and the frozen reference, each its own FSDP2 root (verl and TRL
        wrap them so too): a forward of one never runs the others' hooks."""
        super().shard_models(mesh)
        shard(self.reference, mesh, param_dtype=None)  # already in the compute dtype (setup)

    # ----- experience ---------------------------------------------------------------------------
    def _per_micro_batch(self, fn, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``fn(ids, mask)`` over micro-batches of rows, concatenated: bounds activation memory.
        Every rank runs as many forwards (each one all-gathers under FSDP): a rank with fewer
        rows (SPO-tree's edges) repeats its first micro-batch and drops the result."""
        size = self.hparams.micro_batch_size
        chunks = list(zip(input_ids.split(size), attention_mask.split(size)))
        out = [fn(ids, mask) for ids, mask in chunks]
        for _ in range(agreed_max(len(chunks)) - len(chunks)):
            fn(*chunks[0])
        return torch.cat(out)

    def outputs(self, model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, columns: slice) -> Tensor:
        """``model``'s logits ``(B, C, V)`` (a critic's values ``(B, C)``) at the padded batch's
        ``columns`` only, from a packed forward when ``packing`` is on. Padded places are not zeroed."""
        if self.packing:
            packed = pack(input_ids, attention_mask, self.tokenizer.pad_token_id)
            index = packed.index[:, columns].clamp(min=0)
            inputs = dict(input_ids=packed.input_ids, attention_mask=None, position_ids=packed.position_ids)
        else:
            B, W = input_ids.shape
            index = torch.arange(B, device=input_ids.device)[:, None] * W + torch.arange(W, device=input_ids.device)[columns]
            inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask))
        with head_only_at(model, index):
            out = model(**inputs, use_cache=False)
        return getattr(out, "logits", out)

    @torch.no_grad()
    def sequence_logprobs(self, model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, T: int) -> Tensor:
        """Temperature-scaled log-probs ``(B, T)`` of the last ``T`` tokens."""

        def logprobs(ids: Tensor, mask: Tensor) -> Tensor:
            logits = self.outputs(model, ids, mask, slice(-T - 1, -1))
            return token_logprobs(logits / self.score_temperature, ids[:, -T:], with_entropy=False)[0]

        return self._per_micro_batch(logprobs, input_ids, attention_mask)

    @torch.no_grad()
    def critic_values(self, input_ids: Tensor, attention_mask: Tensor, T: int) -> Tensor:
        """V(s_t) ``(B, T)`` for the state before each response token."""
        return self._per_micro_batch(lambda ids, mask: self.outputs(self.critic, ids, mask, slice(-T - 1, -1)), input_ids, attention_mask)

    @torch.no_grad()
    def score_tokens(
        self, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor, sampler_logprobs: list[list[float] | None] | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Sampled episodes' log-probs under the policy and the reference, and the critic's values
        (``None`` without a critic), all ``(B, T)`` over the ``T`` response columns. The policy's
        come from ``sampler_logprobs`` (one list per episode) when the engine gave them all."""
        T = response_mask.shape[1]
        if self.sampler_logprobs and sampler_logprobs and all(lp is not None for lp in sampler_logprobs):
            old_logprobs = pad_rows(sampler_logprobs, T).to(response_mask.device)  # fp32
        else:
            old_logprobs = self.sequence_logprobs(self.policy, input_ids, attention_mask, T)
        ref_logprobs = self.sequence_logprobs(self.reference, input_ids, attention_mask, T)
        values = self.critic_values(input_ids, attention_mask, T) * response_mask if self.critic is not None else None
        return old_logprobs, ref_logprobs, values

    def update_value_pretraining(self, values: Tensor, returns: Tensor, mask: Tensor) -> dict[str, float]:
        """VC-PPO: pretrain the critic until its explained variance on fresh rollouts stops improving.
        The explained variance is that of all ranks' tokens together, so every rank decides alike."""
        error = returns - values
        sums = [mask, error * mask, error**2 * mask, returns * mask, returns**2 * mask, values * mask]
        n, s_err, s_err2, s_ret, s_ret2, s_val = pooled_sums(*(float(x.sum()) for x in sums))
        n = max(n, 1.0)
        residual_var = s_err2 / n - (s_err / n) ** 2
        returns_var = s_ret2 / n - (s_ret / n) ** 2
        ev = 1 - residual_var / max(returns_var, 1e-8)
        state = self.value_pretraining
        if state["active"]:
            if ev > state["best_ev"]:
                state["best_ev"], state["stale"] = ev, 0
            else:
                state["stale"] += 1
            if state["stale"] >= self.algorithm.value_pretrain_patience or self.current_epoch >= self.algorithm.value_pretrain_iterations:
                state["active"] = False
        return {"critic/value_mean": s_val / n, "critic/explained_variance": ev, "critic/value_pretraining": float(state["active"])}

    def update_kl_coef(self, sequence_kl: float) -> None:
        """After an iteration: adapt ``kl_coef`` to ``kl_target`` (Ziegler et al. 2019), if set."""
        hp = self.hparams
        if hp.kl_target is not None:
            episodes = self.trainer.datamodule.prompts_per_iteration * hp.responses_per_prompt
            self.kl_coef = adaptive_kl_coef(self.kl_coef, sequence_kl, hp.kl_target, hp.kl_horizon, episodes)

    def configure_callbacks(self):
        """A default rollout callback (``HFEngine``) when ``trainer.callbacks`` has none."""
        from lit_vine.callbacks.rollout import RolloutCallback, rollout_callback

        return [] if rollout_callback(self._trainer) is not None else [RolloutCallback()]

    # ----- training -----------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        optimizers = [torch.optim.AdamW(self.policy.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)]
        if self.critic is not None:
            optimizers.append(torch.optim.AdamW(self.critic.parameters(), lr=hp.critic_learning_rate, weight_decay=hp.weight_decay))
        # iterations x ppo_epochs x mini-batches: the reference's total_num_training_steps
        total = self.trainer.estimated_stepping_batches if self.lr_schedule.needs_total else None
        return optimizers, [self.lr_schedule.scheduler(opt, total) for opt in optimizers]

    def _micro_batches(self, batch: Experience):
        """Micro-batches, each with its share of the mini-batch per aggregation, so that the summed
        micro-batch losses equal the mini-batch loss: a share of the tokens for ``token_mean``, of
        the responses otherwise (filler rows, which have no token, are no response)."""
        tokens, rows = batch.loss_mask.sum().clamp(min=1), len(batch)
        responses = batch.loss_mask.sum(-1) > 0
        size = self.hparams.micro_batch_size
        if self.algorithm.objective == "dpo":  # keep (chosen, rejected) pairs in one micro-batch
            size = max(2, size - size % 2)
        for idx in torch.arange(rows, device=batch.input_ids.device).split(size):
            micro = batch.select(idx)
            by_rows = responses[idx].sum() / responses.sum().clamp(min=1)
            yield micro, {"token_mean": micro.loss_mask.sum() / tokens, "seq_mean": by_rows, "seq_sum": by_rows}

    def training_step(self, batch: MiniBatch, batch_idx: int) -> None:
        batch = batch.experience
        optimizers = self.optimizers()
        policy_opt, critic_opt = optimizers if isinstance(optimizers, list) else (optimizers, None)
        logs: dict[str, Tensor] = {}

        def add(name: str, value: Tensor, weight) -> None:
            logs[name] = logs.get(name, 0.0) + value.detach() * weight

        if self.whitening == "mini_batch":  # statistics of the whole mini-batch, over all ranks
            batch = replace(batch, advantages=whiten(batch.advantages, batch.loss_mask))
        if not self.value_pretraining["active"]:
            for micro, share in self._micro_batches(batch):
                loss, stats = self._policy_loss(micro, share)
                self.manual_backward(loss)
                for name, value in stats.items():  # already weighted by the micro-batch's share
                    add(f"train/{name}", value, 1.0)
            logs["train/policy_grad_norm"] = self._step(policy_opt, self.policy, "policy", batch_idx, logs.get("train/policy_loss"), logs.get("train/ratio"))

        if critic_opt is not None:
            hp = self.hparams
            for micro, share in self._micro_batches(batch):
                values = self.outputs(self.critic, micro.input_ids, micro.attention_mask, slice(micro.prompt_width - 1, -1))
                v_loss, v_stats = value_loss(values, micro.old_values, micro.returns, micro.response_mask, hp.value_clip, hp.loss_aggregation)
                weight = share[hp.loss_aggregation]
                self.manual_backward(v_loss * weight)
                add("train/value_loss", v_loss, weight)
                add("train/value_clip_frac", v_stats["value_clip_frac"], weight)
            logs["train/critic_grad_norm"] = self._step(critic_opt, self.critic, "critic", batch_idx, logs.get("train/value_loss"))

        logs["train/policy_updates"] = torch.tensor(float(self.policy_updates))  # all so far: a step axis for every method
        logs["train/skipped_updates"] = torch.tensor(float(self.update_guard.skipped))
        logs["train/learning_rate"] = torch.tensor(policy_opt.param_groups[0]["lr"])
        self.log_dict(logs, prog_bar=False)
        self.log("iteration", float(self.current_epoch), prog_bar=True)

    def _policy_loss(self, micro: Experience, share: dict[str, Tensor | float]) -> tuple[Tensor, dict[str, Tensor]]:
        """The algorithm's objective on one micro-batch plus the KL and entropy terms, and their
        statistics, each weighted by the micro-batch's ``share`` of the mini-batch under its own
        aggregation (summed over micro-batches they give the mini-batch's values)."""
        hp = self.hparams
        P, mask = micro.prompt_width, micro.loss_mask
        logits = self.outputs(self.policy, micro.input_ids, micro.attention_mask, slice(P - 1, -1))
        logprobs, entropy = token_logprobs(logits / self.score_temperature, micro.input_ids[:, P:], entropy_grad=hp.entropy_coef != 0)
        objective, how = self.algorithm.objective, hp.loss_aggregation
        if objective == "ppo":
            loss, stats = ppo_policy_loss(
                logprobs, micro.old_logprobs, micro.advantages, mask, hp.clip_low, hp.clip_high, how, hp.dual_clip, hp.log_ratio_clip
            )
        elif objective == "nll":
            loss, stats = aggregate(-logprobs * micro.advantages, mask, how), {}
        else:  # dpo: rows are (chosen, rejected) pairs, a mean over pairs
            seq, ref = (logprobs * mask).sum(-1), (micro.ref_logprobs * mask).sum(-1)
            pairs = mask[0::2].any(-1)  # filler rows (lit_vine.experience.Experience.padded_to) form no pair
            loss, stats = dpo_positive_loss(seq[0::2], seq[1::2], ref[0::2], ref[1::2], self.algorithm.beta, self.algorithm.lambda_dpop, pairs)
            how = "seq_mean"
        kl_how = hp.kl_aggregation or hp.loss_aggregation
        kl = aggregate(self.kl_tokens(logprobs, micro.ref_logprobs), mask, kl_how)
        ent = aggregate(entropy, mask, hp.loss_aggregation)
        total = share[how] * loss
        if hp.entropy_coef:
            total = total - hp.entropy_coef * share[hp.loss_aggregation] * ent
        if hp.kl_in == "loss" and objective == "ppo":
            total = total + share[kl_how] * self.kl_coef * kl
        per_pair = "seq_mean" if objective == "dpo" else "token_mean"
        stats = {name: value * share[per_pair] for name, value in stats.items()}
        stats.update(policy_loss=loss.detach() * share[how], kl_ref=kl.detach() * share[kl_how], entropy=ent.detach() * share[hp.loss_aggregation])
        return total, stats

    def kl_tokens(self, logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
        """Per-token KL to the reference ``(B, T)``: the chosen estimator, clamped by ``kl_clip``."""
        hp = self.hparams
        kl = kl_estimate(logprobs, ref_logprobs, hp.kl_estimator, hp.log_ratio_clip)
        return kl if hp.kl_clip is None else kl.clamp(-hp.kl_clip, hp.kl_clip)

    def _step(self, optimizer, model: torch.nn.Module, name: str = "policy", batch_idx: int = 0, loss: Tensor | None = None, ratio: Tensor | None = None) -> Tensor:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.hparams.max_grad_norm)  # over all shards under FSDP2
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        # A non-finite loss or gradient, or a ratio explosion, skips the update (faults.UpdateGuard);
        # every process takes the same decision. The schedule moves on either way, as in the reference.
        reason = self.update_guard.reason_to_skip(name, None if loss is None else float(loss), float(norm), None if ratio is None else float(ratio))
        skip = self.trainer.strategy.reduce_boolean_decision(reason is not None, all=False)
        self.update_guard.record(name, (reason or "another process skipped this update") if skip else None, self.current_epoch, batch_idx)
        if not skip:
            optimizer.step()
            self.policy_updates += name == "policy"
        optimizer.zero_grad(set_to_none=True)
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        schedulers[0 if name == "policy" else 1].step()
        return norm.detach()

    # ----- checkpoints (lit_vine/checkpointing.py, docs/robustness.md) -----------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpointing.save_run_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpointing.load_run_state(self, checkpoint)
