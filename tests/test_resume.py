"""Exact resume: k iterations, stop, resume to n == n iterations straight (CPU, bitwise)."""

from __future__ import annotations

import pytest
import torch
from lightning import Callback, Trainer
from lightning.pytorch.loggers import Logger
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import REPO
from lit_vine import ArithmeticTask, RLModule, TaskDataModule, VinePPO
from lit_vine.checkpointing import RunCheckpoint
from lit_vine.evaluation import EvalConfig
from lit_vine.faults import CheckpointOnInterrupt

SFT = str(REPO / "checkpoints" / "sft-arith")
N = 3  # iterations of the reference run


class Recorder(Logger):
    """Keeps every logged metric (timings left out: they are the only thing allowed to differ)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    name, version = "recorder", 0

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((step, {k: float(v) for k, v in metrics.items() if not k.startswith(("time/", "memory/"))}))  # measurements, not run state


class SigtermAt(Callback):
    """Acts as if SIGTERM arrived during mini-batch ``batch`` of iteration ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            trainer._signal_connector.received_sigterm = True


def make(tmp_path, iterations, callbacks=(), recorder=None):
    torch.manual_seed(0)
    module = RLModule(
        policy=SFT,
        algorithm=VinePPO(num_mc_rollouts=2, max_step_for_value_estimation=1),
        responses_per_prompt=2,
        max_new_tokens=40,
        learning_rate=1e-3,
        mini_batch_size=2,
        micro_batch_size=2,
        kl_target=0.01,  # the adaptive KL coefficient is state that must survive
        kl_horizon=100,
        evaluation=EvalConfig(num_samples=0),
    )
    data = TaskDataModule(ArithmeticTask(num_train=64, num_validation=2, num_test=2), prompts_per_iteration=2, eval_batch_size=2)
    trainer = Trainer(
        max_epochs=iterations,
        accelerator="cpu",
        logger=recorder or Recorder(),
        default_root_dir=tmp_path,
        callbacks=[
            RunCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1, save_top_k=-1, filename="iter{epoch}", auto_insert_metric_name=False),
            RunCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/greedy_acc", mode="max", every_n_epochs=2, filename="best", export_hf=False),
            CheckpointOnInterrupt(),
            *callbacks,
        ],
        check_val_every_n_epoch=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    return module, data, trainer


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    module, data, trainer = make(tmp, N)
    trainer.fit(module, data)
    return module, trainer, torch.get_rng_state()


def assert_same_run(reference, resumed, rows):
    ref_module, ref_trainer, ref_rng = reference
    assert rows == ref_trainer.logger.rows, "logged metrics differ"
    for (name, a), b in zip(ref_module.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs"  # bitwise
    assert resumed.kl_coef == ref_module.kl_coef != 0.01
    assert torch.equal(torch.get_rng_state(), ref_rng)


def test_resume_at_iteration_boundary_is_exact(reference, tmp_path):
    module, data, trainer = make(tmp_path, 2)
    trainer.fit(module, data)
    ckpt = tmp_path / "ckpt"
    assert {p.name for p in ckpt.glob("*.ckpt")} == {"iter0.ckpt", "iter1.ckpt", "last.ckpt", "best.ckpt"}
    saved = torch.load(ckpt / "last.ckpt", weights_only=False)
    assert saved["epoch"] == 1 and "in_iteration" not in saved["lit_vine_rollouts"]  # a boundary checkpoint
    assert not any(k.startswith("reference.") for k in saved["state_dict"]), "the reference is rebuilt, not stored"

    # The HF export next to a kept checkpoint loads with plain transformers.
    hf = AutoModelForCausalLM.from_pretrained(ckpt / "last-hf")
    AutoTokenizer.from_pretrained(ckpt / "last-hf")
    for (name, a), b in zip(module.policy.state_dict().items(), hf.state_dict().values()):
        assert torch.equal(a, b), name

    first = trainer.logger.rows
    module, data, trainer = make(tmp_path, N)
    trainer.fit(module, data, ckpt_path="last")
    assert trainer.current_epoch == N
    assert_same_run(reference, module, first + trainer.logger.rows)


def test_resume_from_sigterm_inside_an_iteration_is_exact(reference, tmp_path):
    # SIGTERM after the 2nd of 4 mini-batches of iteration 1: the checkpoint carries the iteration's experience.
    module, data, trainer = make(tmp_path, N, callbacks=[SigtermAt(epoch=1, batch=1)])
    with pytest.raises(SystemExit):
        trainer.fit(module, data)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert saved["lit_vine_rollouts"]["in_iteration"]["mini_batches_done"] == 2
    first = trainer.logger.rows
    module, data, trainer = make(tmp_path, N)
    trainer.fit(module, data, ckpt_path="last")
    assert_same_run(reference, module, first + trainer.logger.rows)


def test_changed_policy_is_refused_on_resume(tmp_path):
    module, data, trainer = make(tmp_path, 1)
    trainer.fit(module, data)
    module.reference.model.norm.weight.data.add_(1.0)  # as if model.policy named another checkpoint
    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    from lit_vine.errors import ConfigError

    with pytest.raises(ConfigError, match="does not rebuild the reference model"):
        module.on_load_checkpoint(checkpoint)
