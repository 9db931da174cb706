"""Checkpoints that hold the whole run, so ``--ckpt_path last`` continues it exactly.

Lightning's checkpoint already holds the weights (``state_dict``), the optimizers, the loops'
progress (iteration = epoch, optimizer steps) and the callbacks' state. :func:`save_run_state`
adds what lives on the :class:`~lit_vine.rl.RLModule`: the adaptive KL coefficient, the value
pretraining state, the skipped-update counters and every RNG; the rollout callback adds, for a
checkpoint written in the middle of an iteration (SIGTERM / Ctrl+C), that iteration's experience
and statistics (``lit_vine.callbacks.rollout``). The frozen reference model is not part of the
module's weights (``RLModule.reference``): it is rebuilt from ``model.policy``, and a fingerprint
checks that it is the same one. Prompts and rollout
seeds are functions of (seed, iteration), so nothing else is needed to pick up the next
iteration. See docs/robustness.md.
"""

from __future__ import annotations

import os
import random
import shutil
from typing import Any

import numpy as np
import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_vine.distributed import all_gather_objects, iter_full_parameters, rank_and_world_size
from lit_vine.errors import ConfigError
from lit_vine.evaluation import EvalConfig
from lit_vine.models import TinyConfig
from lit_vine.schedule import LRSchedule

FORMAT = 1


# Hyperparameters hold these dataclasses; allowing them keeps checkpoints loadable with torch.load's
# default weights_only=True (Lightning's default on resume).
torch.serialization.add_safe_globals([EvalConfig, LRSchedule, TinyConfig])


def rng_state() -> dict[str, Any]:
    """Every RNG, in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def fingerprint(model: torch.nn.Module) -> list[float]:
    """A cheap summary of a model's whole weights (sum and sum of squares in float64), gathered
    where sharded (a collective then: every rank must call it)."""
    total, squares = 0.0, 0.0
    for _, p in iter_full_parameters(model):
        x = p.double()
        total += float(x.sum())
        squares += float((x * x).sum())
    return [total, squares]


def mid_iteration(trainer: Trainer) -> int:
    """Mini-batches done in the running iteration when the checkpoint is written inside one, else 0."""
    loop = trainer.fit_loop
    inside = loop.epoch_progress.current.processed < loop.epoch_progress.current.started
    return loop.epoch_loop.batch_progress.current.completed if inside else 0


def save_run_state(module: LightningModule, checkpoint: dict[str, Any]) -> None:
    """``RLModule.on_save_checkpoint``: add the run's own state."""
    checkpoint["lit_vine"] = {
        "format": FORMAT,
        "iteration": module.current_epoch,
        "kl_coef": module.kl_coef,
        "value_pretraining": dict(module.value_pretraining),
        "update_guard": module.update_guard.state_dict(),
        "policy_updates": module.policy_updates,
        "rng": all_gather_objects(rng_state()),  # every rank's: each resumes its own draws
        "reference_fingerprint": fingerprint(module.reference),
    }


def load_run_state(module: LightningModule, checkpoint: dict[str, Any]) -> None:
    """``RLModule.on_load_checkpoint``: check the rebuilt reference and restore the run's state."""
    state = checkpoint.get("lit_vine")
    if state is None:  # a checkpoint from before run state was saved: weights and optimizers only
        return
    expected, found = state["reference_fingerprint"], fingerprint(module.reference)
    if not np.allclose(expected, found, rtol=1e-9, atol=1e-6):
        raise ConfigError(
            f"model.policy={module.hparams.policy!r} does not rebuild the reference model this checkpoint was trained "
            "against (its weights differ); resume with the run's original model.policy"
        )
    module.kl_coef = state["kl_coef"]
    module.value_pretraining = dict(state["value_pretraining"])
    module.update_guard.load_state_dict(state["update_guard"])
    module.policy_updates = state.get("policy_updates", 0)
    rng = state["rng"]
    if isinstance(rng, list):  # one per rank; a process count that changed resumes rank 0's draws
        rng = rng[module.global_rank] if len(rng) == module.trainer.world_size else rng[0]
    set_rng_state(rng)


# ----- checkpoint files --------------------------------------------------------------------------
def export_hf(module: LightningModule, folder: str) -> None:
    """The policy and its tokenizer in plain ``transformers`` format (``from_pretrained``-able),
    written by rank 0 from the whole weights: sharded ones are gathered first, a collective that
    every rank must join."""
    rank, _ = rank_and_world_size()
    weights = {}
    for name, tensor in iter_full_parameters(module.policy):  # a collective per sharded parameter
        if rank == 0:
            weights[name] = tensor.cpu().clone()
    if rank == 0:
        module.policy.save_pretrained(folder, state_dict=weights)
        module.tokenizer.save_pretrained(folder)


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes at iteration ends (never mid-iteration) and, with
    ``export_hf``, puts a ``transformers`` export of the policy next to every checkpoint it keeps
    (``<name>.ckpt`` -> ``<name>-hf/``; removed with it). Use a fixed ``dirpath`` so that
    ``--ckpt_path last`` finds ``last.ckpt`` on resume.

    Every ``ModelCheckpoint`` argument applies; the defaults here differ in that
    ``save_on_train_epoch_end`` is true (a checkpoint at an iteration boundary, after the adaptive
    KL update and the engine sync).

    Args:
        export_hf: write ``<name>-hf/`` beside each kept checkpoint (``last`` included).
    """

    def __init__(self, *args: Any, export_hf: bool = True, save_on_train_epoch_end: bool | None = True, **kwargs: Any) -> None:
        super().__init__(*args, save_on_train_epoch_end=save_on_train_epoch_end, **kwargs)
        self.export_hf = export_hf

    @staticmethod
    def hf_folder(filepath: str) -> str:
        return os.path.splitext(filepath)[0] + "-hf"

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if self.export_hf and hasattr(trainer.lightning_module, "policy"):  # every rank: the weights are gathered
            export_hf(trainer.lightning_module, self.hf_folder(filepath))

    def _remove_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        folder = self.hf_folder(filepath)
        if trainer.is_global_zero and os.path.isdir(folder):
            shutil.rmtree(folder, ignore_errors=True)
