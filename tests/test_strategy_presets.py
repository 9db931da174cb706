"""configs/strategies/*.yaml combine with a run config through the LightningCLI parser, and the
trained models are the only ones with optimizer state (the reference never has any)."""

from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {
    "ddp": ("lightning.pytorch.strategies.DDPStrategy", {"find_unused_parameters": True}),
    "fsdp": (
        "lightning.pytorch.strategies.FSDPStrategy",
        {
            "sharding_strategy": "FULL_SHARD",
            "auto_wrap_policy": [
                "transformers.models.llama.modeling_llama.LlamaDecoderLayer",
                "transformers.models.llama.modeling_llama.LlamaForCausalLM",
            ],
        },
    ),
    "deepspeed_zero2": ("lightning.pytorch.strategies.DeepSpeedStrategy", {"stage": 2}),
    "deepspeed_zero3": ("lightning.pytorch.strategies.DeepSpeedStrategy", {"stage": 3}),
}


def _resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_strategy_preset_resolves_with_quickstart(preset, monkeypatch):
    from lit_vine.cli import LitVineCLI

    preset_file = ROOT / "configs" / "strategies" / f"{preset}.yaml"
    assert set(yaml.safe_load(preset_file.read_text())) == {"trainer"}, "a preset only sets trainer options"
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        LitVineCLI(args=["fit", "--config", "configs/quickstart.yaml", "--config", str(preset_file), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(out.getvalue())
    trainer = config["trainer"]
    class_path, init_args = EXPECTED[preset]
    assert trainer["strategy"]["class_path"] == class_path
    for key, value in init_args.items():
        got = trainer["strategy"]["init_args"][key]
        if key == "auto_wrap_policy":  # a set of classes: compare the classes, in any order and spelling
            got, value = {_resolve(name) for name in got}, {_resolve(name) for name in value}
        assert got == value, key
    assert trainer["precision"] == "bf16-mixed" and trainer["accelerator"] == "gpu"
    # The run config still applies: model, data and the rest of the trainer come from quickstart.
    assert config["model"]["class_path"] == "lit_vine.RLModule"
    # the run's own settings survive the strategy overlay
    assert trainer["max_epochs"] == yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())["trainer"]["max_epochs"]


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
