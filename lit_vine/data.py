"""DataModules: problems for RL (and the iteration's experience stream), gold solutions for SFT."""

from __future__ import annotations

import random

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset

from lit_vine.distributed import equal_shards
from lit_vine.experience import ExperienceStream, num_mini_batches
from lit_vine.tasks.arithmetic import ArithmeticTask
from lit_vine.tasks.base import Problem, Split, Task


class TaskDataModule(LightningDataModule):
    """Serves a task's problems; in RL, one training epoch streams one iteration's experience.

    Args:
        task: where problems, prompts, rewards and step splits come from.
        prompts_per_iteration: prompts rolled out per RL iteration over all ranks (paper: 64).
        eval_batch_size: problems per validation/test batch.
        seed: order in which training prompts are visited.
        sample_with_replacement: each iteration draws its prompts afresh from the whole training
            set (distinct within the iteration), as the VinePPO reference does
            (``dataset_sample_with_replacement``); otherwise passes over the training set visit
            every problem once, reshuffled each pass.
    """

    def __init__(
        self, task: Task | None = None, prompts_per_iteration: int = 64, eval_batch_size: int = 64, seed: int = 0, sample_with_replacement: bool = False
    ) -> None:
        super().__init__()
        if prompts_per_iteration < 1:
            raise ValueError(f"data.prompts_per_iteration must be >= 1, got {prompts_per_iteration}")
        if eval_batch_size < 1:
            raise ValueError(f"data.eval_batch_size must be >= 1, got {eval_batch_size}")
        self.task = task or ArithmeticTask()
        self.prompts_per_iteration, self.eval_batch_size, self.seed = prompts_per_iteration, eval_batch_size, seed
        self.sample_with_replacement = sample_with_replacement
        self._pass_orders: dict[tuple[int, int], list[int]] = {}  # (pass, n) -> order; only the latest kept

    def iteration_problems(self, iteration: int, rank: int = 0, world_size: int = 1) -> list[Problem]:
        """This rank's prompts for an iteration: a function of (seed, iteration) alone, so a resumed
        run continues the same order. The ranks' shares are disjoint and together are exactly the
        iteration's prompts."""
        k = self.prompts_per_iteration
        if k % world_size:
            raise ValueError(f"data.prompts_per_iteration ({k}) must be divisible by the number of processes ({world_size})")
        train = self.task.problems("train")
        n = len(train)
        if self.sample_with_replacement:
            if k > n:
                raise ValueError(f"data.prompts_per_iteration ({k}) exceeds the {n} training problems")
            chosen = random.Random(f"{self.seed}/iteration/{iteration}").sample(range(n), k)
        else:
            chosen = [self._pass_order(epoch, n)[index] for epoch, index in (divmod(p, n) for p in range(iteration * k, (iteration + 1) * k))]
        return [train[i] for i in chosen][rank::world_size]

    def _pass_order(self, epoch: int, n: int) -> list[int]:
        """The order of the ``n`` training problems in pass ``epoch``: one shuffle per pass, kept while
        the iterations read that pass (a shuffle of 20,000 costs 3 % of a quickstart iteration)."""
        key = (epoch, n)
        if key not in self._pass_orders:
            order = list(range(n))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._pass_orders = {**{k: v for k, v in self._pass_orders.items() if k[0] >= epoch - 1}, key: order}
        return self._pass_orders[key]

    def train_dataloader(self) -> DataLoader:
        module, trainer = self.trainer.lightning_module, self.trainer
        per_rank = self.prompts_per_iteration // trainer.world_size
        episodes = per_rank * module.hparams.responses_per_prompt
        # the rollout callback (lit_vine.RolloutCallback) loads each iteration's experience into it
        self.stream = ExperienceStream(
            num_mini_batches=num_mini_batches(episodes, module.hparams.mini_batch_size),
            ppo_epochs=module.hparams.ppo_epochs,
            shuffle_seed=lambda: module.derived_seed("shuffle"),
            unit=2 if module.algorithm.objective == "dpo" else 1,
        )
        return DataLoader(self.stream, batch_size=None)

    def setup(self, stage: str) -> None:
        # The task learns the policy's tokenizer before serving problems (prompt-length rules).
        tokenizer = getattr(self.trainer.lightning_module, "tokenizer", None) if self.trainer else None
        if tokenizer is not None:
            self.task.prepare(tokenizer)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if isinstance(batch, list) and batch and isinstance(batch[0], Problem):
            return batch  # evaluation batches are problems: text, nothing to move
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _problems_loader(self, split: Split) -> DataLoader:
        # Each process evaluates its own share, so every problem is evaluated exactly once and the
        # synced metrics are those of the whole split, in as many batches as the others (a batch may
        # be empty: its evaluation still runs the engine's collectives, lit_vine.distributed). An
        # IterableDataset keeps Lightning from adding a DistributedSampler, which would pad the
        # last share with repeats.
        trainer = getattr(self, "trainer", None)
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        batches = ProblemBatches(equal_shards(self.task.problems(split), self.eval_batch_size, rank, world_size))
        return DataLoader(batches, batch_size=None, collate_fn=_keep)

    def val_dataloader(self) -> DataLoader:
        return self._problems_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._problems_loader("test")


class ProblemBatches(IterableDataset):
    """Batches (lists) of problems, in order."""

    def __init__(self, batches: list[list[Problem]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        yield from self.batches


def _keep(batch):
    return batch


class SFTDataModule(TaskDataModule):
    """Prompt + gold solution + EOS, with the loss on the solution tokens only.

    Args:
        batch_size: sequences per optimizer step.
        max_length: longer examples are skipped (and counted in the log).
        response_template: the target text around the solution; the VinePPO reference trains on
            ``"\n{solution}\n"`` after prompts that end in ``Solution:``.
    """

    def __init__(
        self,
        task: Task | None = None,
        batch_size: int = 64,
        max_length: int = 256,
        response_template: str = "{solution}",
        eval_batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__(task, prompts_per_iteration=1, eval_batch_size=eval_batch_size, seed=seed)
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if "{solution}" not in response_template:
            raise ValueError(f"data.response_template must contain {{solution}}, got {response_template!r}")
        self.batch_size, self.max_length, self.response_template = batch_size, max_length, response_template

    def train_dataloader(self) -> DataLoader:
        tokenizer = self.trainer.lightning_module.tokenizer
        examples, skipped = [], 0
        for p in self.task.problems("train"):
            prompt = self.task.prompt_ids(p, tokenizer)
            text = self.response_template.replace("{solution}", p.solution)
            target = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
            if len(prompt) + len(target) > self.max_length:
                skipped += 1
                continue
            examples.append((prompt, target))
        if skipped:
            print(f"SFT: skipped {skipped} of {skipped + len(examples)} training examples longer than data.max_length={self.max_length}")
        if not examples:
            raise ValueError(f"SFT: no training example fits in data.max_length={self.max_length}")

        def collate(batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
            width = max(len(p) + len(t) for p, t in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id)
            labels = torch.full_like(ids, -100)
            mask = torch.zeros_like(ids)
            for row, (p, t) in enumerate(batch):
                ids[row, : len(p) + len(t)] = torch.tensor(p + t)
                labels[row, len(p) : len(p) + len(t)] = torch.tensor(t)
                mask[row, : len(p) + len(t)] = 1
            return {"input_ids": ids, "attention_mask": mask, "labels": labels}

        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(examples, batch_size=self.batch_size, shuffle=True, collate_fn=collate, generator=generator)
