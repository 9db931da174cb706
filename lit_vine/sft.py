"""Supervised fine-tuning on gold solutions: the warm start every RL run begins from."""

from __future__ import annotations

import os

import torch

from lit_vine.evaluation import EvalConfig
from lit_vine.models import BUILTIN_TINY, TinyConfig
from lit_vine.errors import check
from lit_vine.policy_module import PolicyModule
from lit_vine.rollout.engine import RolloutEngine


class SFTModule(PolicyModule):
    """Next-token loss on the solution tokens; saves the policy and tokenizer with ``save_pretrained``.

    Args:
        policy: model to fine-tune; ``builtin:tiny`` builds the offline tiny Llama of size ``tiny``.
        learning_rate, weight_decay, warmup_steps: AdamW with linear warmup then cosine decay.
        output_dir: where the fine-tuned policy is saved at the end of training.
    """

    def __init__(
        self,
        policy: str = BUILTIN_TINY,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        output_dir: str = "checkpoints/sft-arith",
        engine: RolloutEngine | None = None,
        max_new_tokens: int = 64,
        evaluation: EvalConfig = EvalConfig(num_samples=0),
        tiny: TinyConfig = TinyConfig(),
        seed: int = 0,
    ) -> None:
        check(learning_rate > 0, f"learning_rate must be > 0, got {learning_rate}")
        check(warmup_steps >= 0, f"warmup_steps must be >= 0, got {warmup_steps}")
        super().__init__(policy, engine, max_new_tokens, evaluation, tiny, seed)
        self.save_hyperparameters(ignore=["engine"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.policy(**batch).loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.policy.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
        total = max(1, self.trainer.estimated_stepping_batches)

        def schedule(step: int) -> float:
            if step < hp.warmup_steps:
                return (step + 1) / hp.warmup_steps
            progress = (step - hp.warmup_steps) / max(1, total - hp.warmup_steps)
            return 0.5 * (1 + torch.cos(torch.tensor(torch.pi * min(1.0, progress)))).item()

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            os.makedirs(self.hparams.output_dir, exist_ok=True)
            self.policy.save_pretrained(self.hparams.output_dir)
            self.tokenizer.save_pretrained(self.hparams.output_dir)
            print(f"saved the fine-tuned policy to {self.hparams.output_dir}")
