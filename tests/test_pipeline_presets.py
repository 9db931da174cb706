"""The paper's pipeline presets (SFT -> RL -> test) offline: the SFT presets hold the VinePPO
authors' settings and feed their RL preset; an SFT preset trains the tiny policy on the real GSM8K /
MATH500 files and the RL preset runs an iteration from what it wrote; SFT's loss aggregations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_vine.cli import LitVineCLI
from lit_vine.models import build_tiny, TinyConfig
from lit_vine.sft import SFTModule
from test_eval_presets import DATA, ParseOnly, local_overrides

REPO = Path(__file__).resolve().parents[1]

# SFT preset -> (RL preset reading its output, learning rate, the response template), as in the
# authors' configs/sft_{rho1b,deepseekmath}_for_{gsm8k,MATH}.jsonnet
SFT_PRESETS = {
    "sft_gsm8k_rho1b": ("gsm8k_rho1b_vineppo", 1e-5, "\n{solution}\n"),
    "sft_math_rho1b": ("math_rho1b_vineppo", 1e-5, "\n{solution}\n"),
    "sft_gsm8k_deepseek7b": ("gsm8k_deepseek7b_vineppo", 5e-5, "\n{solution}\n"),
    "sft_math_deepseek7b": ("math_deepseek7b_vineppo", 5e-5, "\n{solution}"),
    "sft_gsm8k_qwen05b": ("gsm8k_qwen05b_vineppo", 1e-5, "\n{solution}\n"),
}


def parse(preset: str, command: str = "fit") -> dict:
    config = ParseOnly(args=[command, "--config", str(REPO / "configs" / f"{preset}.yaml"), *local_overrides(preset.removeprefix("sft_").removeprefix("eval_"))]).config[command]
    return config


@pytest.mark.parametrize("preset", SFT_PRESETS)
def test_sft_presets_hold_the_reference_settings_and_feed_their_rl_preset(preset):
    rl_preset, learning_rate, template = SFT_PRESETS[preset]
    config = parse(preset)
    model, data, trainer = config.model.init_args, config.data.init_args, config.trainer
    assert (trainer.max_epochs, model.learning_rate, model.weight_decay, model.loss_aggregation) == (2, learning_rate, 0.0, "seq_mean_token_mean")
    devices = trainer.devices if isinstance(trainer.devices, int) else 1
    assert devices * data.batch_size * trainer.accumulate_grad_batches == 64  # solutions per optimizer step
    assert model.lr_schedule.as_dict() == {"warmup_steps": 0, "warmup_ratio": 0.03, "warmup": "log", "decay": "linear"}
    assert (data.response_template, data.max_length, trainer.gradient_clip_val) == (template, 2048, 1.0)
    assert data.task.init_args.prompt["template"] == "[MATH_TASK] Problem:\n{query}\n\nSolution:"
    assert parse(rl_preset).model.init_args.policy == model.output_dir


@pytest.mark.parametrize("preset", ["eval_gsm8k", "eval_math500"])
def test_eval_presets_follow_the_paper_protocol(preset):
    config = parse(preset, "test")
    model = config.model.init_args
    assert config.model.class_path == "lit_vine.PolicyModule"
    assert (model.evaluation.num_samples, model.evaluation.temperature, model.evaluation.top_p, model.max_new_tokens) == (16, 0.35, 0.9, 1024)


def scalars(log_dir: Path, tag: str) -> list[float]:
    events = EventAccumulator(str(log_dir)).Reload()
    return [e.value for e in events.Scalars(tag)]


@pytest.mark.parametrize("kind", ["gsm8k", "math"])
def test_sft_preset_trains_offline_and_the_rl_preset_starts_from_its_output(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    sft_preset, rl_preset = f"sft_{kind}_rho1b", f"{kind}_rho1b_vineppo"
    out = tmp_path / "sft"
    # MATH500 is the only MATH file in ../shared/data: here it is the SFT training set too
    math500 = ["--data.init_args.task.init_args.train", str(DATA / "math500" / "test.jsonl")] if kind == "math" and (DATA / "math500").is_dir() else []
    sft = LitVineCLI(args=[
        "fit", "--config", f"configs/{sft_preset}.yaml", *local_overrides(kind), *math500,
        "--model.init_args.policy", "builtin:tiny", "--model.init_args.tiny.max_position_embeddings", "2048",
        "--model.init_args.learning_rate", "1e-3",  # the tiny policy starts from random weights
        "--model.init_args.output_dir", str(out), "--trainer.max_steps", "20", "--trainer.limit_val_batches", "0",
        "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
        "--trainer.enable_progress_bar", "false",
        "--data.init_args.batch_size", "2", "--trainer.accumulate_grad_batches", "1",  # 64 x ~700 byte tokens is slow on a CPU
    ])
    sft.trainer.logger.experiment.close()  # the event file complete before it is read
    loss = scalars(next((tmp_path / "logs").glob("*/version_0")), "train/loss")
    assert len(loss) == 20
    assert sum(loss[-5:]) / 5 < sum(loss[:5]) / 5 - 0.5, loss
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()

    cli = LitVineCLI(args=[
        "fit", "--config", f"configs/{rl_preset}.yaml", *local_overrides(kind),
        "--model.init_args.policy", str(out), "--trainer.max_epochs", "1", "--trainer.callbacks", "[]",
        "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.enable_checkpointing", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.enable_progress_bar", "false",
        "--model.init_args.algorithm.init_args.num_mc_rollouts", "2", "--model.init_args.responses_per_prompt", "2",
        "--model.init_args.max_new_tokens", "16", "--model.init_args.mini_batch_size", "4", "--model.init_args.micro_batch_size", "4",
        "--data.init_args.prompts_per_iteration", "2",
    ])
    assert cli.trainer.current_epoch == 1 and cli.trainer.global_step >= 1
    written = load_file(out / "model.safetensors")
    reference = cli.model.reference.state_dict()
    assert all(torch.equal(reference[name], tensor) for name, tensor in written.items())  # RL started from the SFT output


def test_sft_loss_aggregations_match_hand_computed_values():
    policy, tokenizer = build_tiny(TinyConfig(num_layers=1))
    module = SFTModule(loss_aggregation="seq_mean_token_mean")
    module.policy = policy
    # two sequences: solution tokens at positions 2..3 of the first (2 tokens), 1..5 of the second (5)
    ids = torch.tensor([[5, 6, 7, 8, 0, 0, 0], [9, 10, 11, 12, 13, 14, 15]])
    labels = torch.full_like(ids, -100)
    labels[0, 2:4], labels[1, 1:6] = ids[0, 2:4], ids[1, 1:6]
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1] * 7])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    logp = torch.log_softmax(policy(input_ids=ids, attention_mask=mask).logits.float(), -1)
    nll = [[-logp[r, t - 1, ids[r, t]].item() for t in range(7) if labels[r, t] != -100] for r in range(2)]
    per_sequence = (sum(nll[0]) / 2 + sum(nll[1]) / 5) / 2
    per_token = (sum(nll[0]) + sum(nll[1])) / 7
    module.log = lambda *args, **kwargs: None
    assert module.training_step(batch, 0).item() == pytest.approx(per_sequence, rel=1e-5)
    module.hparams.loss_aggregation = "token_mean"
    assert module.training_step(batch, 0).item() == pytest.approx(per_token, rel=1e-5)
    assert abs(per_sequence - per_token) > 1e-3  # the two really differ on this batch
