"""Supervised fine-tuning on gold solutions: the warm start every RL run begins from."""

from __future__ import annotations

import os

import torch

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
    """

    def __init__(
        self,
        policy: str = BUILTIN_TINY,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: LRSchedule = LRSchedule(warmup_steps=100, decay="cosine"),
        output_dir: str = "checkpoints/sft-arith",
        max_new_tokens: int = 64,
        evaluation: EvalConfig = EvalConfig(num_samples=0),
        tiny: TinyConfig = TinyConfig(),
        seed: int = 0,
    ) -> None:
        check(learning_rate > 0, f"learning_rate must be > 0, got {learning_rate}")
        super().__init__(policy, max_new_tokens, evaluation, tiny, seed)
        self.save_hyperparameters()
        self.lr_schedule = lr_schedule  # under LightningCLI, hparams hold it as a dict

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.policy(**batch).loss
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
