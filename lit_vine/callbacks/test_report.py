"""The before/after test report and learning curve that every RL run ends with."""

from __future__ import annotations

import json
import os
import zlib

import matplotlib

matplotlib.use("Agg")  # files only: runs have no display
import matplotlib.pyplot as plt  # noqa: E402
from lightning import Callback, LightningModule, Trainer  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from lit_vine.devices import precision_context
from lit_vine.distributed import equal_shards
from lit_vine.evaluation import summarize
from lit_vine.policy_module import gather_records, write_jsonl  # noqa: E402


class TestReport(Callback):
    """Evaluates the test split before training (the starting checkpoint) and after it, with the
    same problems, sampling and seed; prints both and writes ``test_report.json`` to the log dir,
    with ``learning_curve.png``: validation accuracy per iteration between the two test points.

    Args:
        limit: evaluate only the first ``limit`` test problems (``None``: all).
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.before: dict[str, float] = {}
        self.curve: list[tuple[int, dict[str, float]]] = []  # (iteration, validation metrics)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = {k[4:]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if metrics and not trainer.sanity_checking:
            self.curve.append((trainer.current_epoch + 1, metrics))

    def _evaluate(self, trainer: Trainer, module: LightningModule, label: str) -> dict[str, float]:
        problems = trainer.datamodule.task.problems("test")[: self.limit]
        batches = equal_shards(problems, trainer.datamodule.eval_batch_size, trainer.global_rank, trainer.world_size)
        seed = zlib.crc32(f"{module.seed}/test-report".encode())
        records = []
        with precision_context(trainer):  # outside the *_step hooks: the trainer's numerics, set here
            for k, batch in enumerate(tqdm(batches, desc=f"test ({label})", disable=not trainer.is_global_zero)):
                records += module.evaluate_problems(batch, seed=seed + k * trainer.datamodule.eval_batch_size)
        records = gather_records(records)
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask, not only rank 0
        if trainer.is_global_zero and log_dir:
            write_jsonl(os.path.join(log_dir, "predictions", f"test_{label}.jsonl"), records)
        return summarize(records)

    # Resuming must not re-measure "before" on the resumed policy: it travels in the checkpoint.
    def state_dict(self) -> dict:
        return {"before": self.before, "curve": self.curve}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before, self.curve = state_dict["before"], [tuple(point) for point in state_dict["curve"]]

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path is None or not self.before:
            self.before = self._evaluate(trainer, pl_module, "before")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        after = self._evaluate(trainer, pl_module, "after")
        log_dir = trainer.log_dir  # a broadcast under DDP: ask on every rank before rank 0 goes on alone
        if not trainer.is_global_zero:
            return
        report = {"before": self.before, "after": after, "iterations": trainer.current_epoch, "optimizer_steps": trainer.global_step}
        lines = [f"{'test metric':<12} {'before':>8} {'after':>8} {'change':>8}"]
        for name, value in after.items():
            old = self.before.get(name, float("nan"))
            lines.append(f"{name:<12} {100 * old:>7.1f}% {100 * value:>7.1f}% {100 * (value - old):>+7.1f}")
        print("\n".join(lines))
        if log_dir:
            path = os.path.join(log_dir, "test_report.json")
            with open(path, "w") as f:
                json.dump(report, f, indent=2)
            print(f"test report written to {path}")
            self._plot(os.path.join(log_dir, "learning_curve.png"), after, trainer.current_epoch)

    def _plot(self, path: str, after: dict[str, float], iterations: int) -> None:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, name in enumerate(after):
            color = f"C{i}"
            points = [(it, m[name]) for it, m in self.curve if name in m]
            if points:
                ax.plot(*zip(*[(x, 100 * y) for x, y in points]), marker="o", color=color, label=f"validation {name}")
            ax.plot([0, iterations], [100 * self.before.get(name, float("nan")), 100 * after[name]], "s--", color=color, alpha=0.6, label=f"test {name}")
        ax.set_xlabel("RL iteration")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(f"learning curve written to {path}")
