"""configs/strategies/*.yaml combine with a run config through the LightningCLI parser, and the
trained models are the only ones with optimizer state (the reference never has any)."""

from __future__ import annotations

import contextlib
import io
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {
    "ddp": ("lightning.pytorch.strategies.DDPStrategy", {"find_unused_parameters": True}),
    "fsdp": ("lightning.pytorch.strategies.ModelParallelStrategy", {}),
    "deepspeed_zero2": ("lightning.pytorch.strategies.DeepSpeedStrategy", {"stage": 2}),
    "deepspeed_zero3": ("lightning.pytorch.strategies.DeepSpeedStrategy", {"stage": 3}),
}
RUNS = ["quickstart", "gsm8k_rho1b_vineppo", "gsm8k_rho1b_ppo", "gsm8k_deepseek7b_vineppo"]


def parsed(args: list[str], monkeypatch) -> dict:
    """The whole configuration ``lit-vine <args>`` would run, as LightningCLI resolves it."""
    from lit_vine.cli import LitVineCLI, canonical_algorithm_flag

    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        LitVineCLI(args=canonical_algorithm_flag(args) + ["--print_config"])
    assert exit_info.value.code in (0, None), args
    return yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_strategy_preset_composes_with_the_run_presets(preset, run, monkeypatch):
    preset_file = ROOT / "configs" / "strategies" / f"{preset}.yaml"
    assert set(yaml.safe_load(preset_file.read_text())) == {"trainer"}, "a preset only sets trainer options"
    config = parsed(["fit", "--config", f"configs/{run}.yaml", "--config", str(preset_file)], monkeypatch)
    trainer = config["trainer"]
    class_path, init_args = EXPECTED[preset]
    assert trainer["strategy"]["class_path"] == class_path
    for key, value in init_args.items():
        assert trainer["strategy"]["init_args"][key] == value, key
    assert trainer["precision"] == "bf16-mixed" and trainer["accelerator"] == "gpu"
    # The run config still applies: model, data and the rest of the trainer come from the run.
    run_config = yaml.safe_load((ROOT / "configs" / f"{run}.yaml").read_text())
    assert config["model"]["class_path"] == run_config["model"]["class_path"]
    assert trainer["max_epochs"] == run_config["trainer"]["max_epochs"]


def commands_in_comments(path: Path) -> list[list[str]]:
    """The ``lit-vine fit ...`` commands a preset's comments give (continued lines joined); a
    comment line of flags only ("On CPU ... : --trainer.x y") is appended to the first command."""
    lines, commands, flags = path.read_text().splitlines(), [], []
    text = "\n".join(line[1:].strip() for line in lines if line.startswith("#"))
    for command in text.replace("\\\n", " ").splitlines():
        if command.startswith("lit-vine "):
            commands.append(shlex.split(command)[1:])
        elif ": --" in command:
            flags.append(shlex.split(command.split(": ", 1)[1]))
    return commands + [commands[0] + f for f in flags]


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_the_commands_a_preset_names_parse(preset, monkeypatch):
    commands = commands_in_comments(ROOT / "configs" / "strategies" / f"{preset}.yaml")
    assert commands, "a preset says how to use it"
    for args in commands:
        config = parsed(args, monkeypatch)
        assert config["trainer"]["strategy"]["class_path"] == EXPECTED[preset][0], args


@pytest.mark.parametrize("algorithm", ["VinePPO", "PPO"])
def test_only_trained_models_get_optimizer_state(algorithm):
    import lit_vine
    from lit_vine.rl import RLModule

    module = RLModule(policy="builtin:tiny", algorithm=getattr(lit_vine, algorithm)())
    optimizers, schedulers = module.configure_optimizers()
    assert len(schedulers) == len(optimizers)
    optimized = {id(p) for opt in optimizers for group in opt.param_groups for p in group["params"]}
    trained = {id(p) for p in module.policy.parameters()} | ({id(p) for p in module.critic.parameters()} if module.critic is not None else set())
    reference = {id(p) for p in module.reference.parameters()}
    assert optimized == trained
    assert optimized.isdisjoint(reference)
    assert not any(p.requires_grad for p in module.reference.parameters())
    assert len(optimizers) == (2 if algorithm == "PPO" else 1)
