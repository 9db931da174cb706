"""Supervised fine-tuning on gold solutions: the warm start every RL run begins from."""

from __future__ import annotations

import os
from typing import Literal

import torch
import torch.nn.functional as F

from lit_vine.evaluation import EvalConfig
from lit_vine.models import BUILTIN_TINY, TinyConfig
from lit_vine.errors import check
from lit_vine.policy_module import PolicyModule
from lit_vine.schedule import LRSchedule


class SFTModule(PolicyModule):
    """Next-token loss on the solution tokens; saves the policy and tokenizer with ``save_pretrained``.

    Args:
        policy: model to fine-tune; ``builtin:tiny`` builds the offline tiny Llama of size ``tiny``.
        learning_rate, weight_decay: AdamW settings.
        lr_schedule: warmup and decay over the run's optimizer steps.
        output_dir: where the fine-tuned policy is saved at the end of training.
        loss_aggregation: ``token_mean`` averages the loss over every solution token of the batch
            (transformers' default); ``seq_mean_token_mean`` averages each solution's tokens, then
            the solutions, so short solutions weigh as much as long ones (the VinePPO reference's
            ``per_instance_non_pad_tokens_then_batch``).
    """

    def __init__(
        self,
        policy: str = BUILTIN_TINY,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: LRSchedule = LRSchedule(warmup_steps=100, decay="cosine"),
        output_dir: str = "checkpoints/sft-arith",
        loss_aggregation: Literal["token_mean", "seq_mean_token_mean"] = "token_mean",
        max_new_tokens: int = 64,
        evaluation: EvalConfig = EvalConfig(num_samples=0),
        tiny: TinyConfig = TinyConfig(),
        seed: int = 0,
    ) -> None:
        check(learning_rate > 0, f"learning_rate must be > 0, got {learning_rate}")
        check(loss_aggregation in ("token_mean", "seq_mean_token_mean"),
              f"loss_aggregation must be token_mean or seq_mean_token_mean, got {loss_aggregation!r}")
        super().__init__(policy, max_new_tokens, evaluation, tiny, seed)
        self.save_hyperparameters()
        self.lr_schedule = lr_schedule  # under LightningCLI, hparams hold it as a dict

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """``batch``: ``input_ids``, ``attention_mask`` and ``labels`` ``(B, L)``, labels -100 off the solution."""
        if self.hparams.loss_aggregation == "token_mean":
            loss = self.policy(**batch).loss
        else:
            logits = self.policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")  # (B, L-1)
            tokens = (labels != -100).sum(-1).clamp(min=1)
            loss = (nll.sum(-1) / tokens).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.policy.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
        scheduler = self.lr_schedule.scheduler(optimizer, max(1, self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            os.makedirs(self.hparams.output_dir, exist_ok=True)
            self.policy.save_pretrained(self.hparams.output_dir)
            self.tokenizer.save_pretrained(self.hparams.output_dir)
            print(f"saved the fine-tuned policy to {self.hparams.output_dir}")
