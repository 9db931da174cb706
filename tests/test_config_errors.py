"""Bad configuration values stop the run with an error that names the field."""

import pytest

from conftest import REPO
from lit_vine.algorithms import concrete_algorithms
from lit_vine.cli import LitVineCLI, canonical_algorithm_flag, main


@pytest.mark.parametrize(
    "override, message",
    [
        (["--model.algorithm", "PPOX"], "--model.algorithm: unknown algorithm 'PPOX'; valid: "),
        (["--model.algorithm=Nope"], "unknown algorithm 'Nope'"),
        (["--model.algorithm.num_mc_rollouts", "0"], "num_mc_rollouts (K) must be >= 1"),
        (["--model.learning_rate=-1e-4"], "learning_rate must be > 0"),
        (["--model.policy", "checkpoints/does-not-exist"], "policy: model checkpoint folder not found"),
        (["--model.kl_estimator", "k9"], "kl_estimator"),
        (["--model.responses_per_prompt", "0"], "responses_per_prompt must be >= 1"),
    ],
)
def test_bad_values_name_the_field(override, message, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/quickstart.yaml", "--trainer.max_epochs", "0", *override])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_algorithm_lists_exactly_the_concrete_ones(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        main(["fit", "--config", "configs/quickstart.yaml", "--model.algorithm", "PPOX"])
    valid = capsys.readouterr().err.split("valid: ")[1].split("\n")[0].split(", ")
    # lit-vine's ten, and any subclass defined since (another test module defines one)
    built_in = {"VinePPO", "PPO", "VCPPO", "GRPO", "RLOO", "Reinforce", "RestEM", "DPOPlus", "SPOChain", "SPOTree"}
    assert built_in <= set(valid) and set(valid) == set(concrete_algorithms())
    assert {name for name, cls in concrete_algorithms().items() if cls.__module__.startswith("lit_vine.algorithms.")} == built_in
    assert "GroupBaseline" not in valid and "Algorithm" not in valid


@pytest.mark.parametrize(
    "name, cls",
    [("vineppo", "VinePPO"), ("grpo", "GRPO"), ("vc-ppo", "VCPPO"), ("VC_PPO", "VCPPO"), ("dpo+", "DPOPlus"),
     ("DPO-Plus", "DPOPlus"), ("rest-em", "RestEM"), ("REINFORCE", "Reinforce"), ("PPO", "PPO"), ("spo-chain", "SPOChain"), ("spo-tree", "SPOTree")],
)
def test_algorithm_names_are_case_and_spelling_insensitive(name, cls, monkeypatch):
    monkeypatch.chdir(REPO)
    for flag in (["--model.algorithm", name], [f"--model.algorithm={name}"]):
        args = canonical_algorithm_flag(["--config", "configs/quickstart.yaml", *flag])
        cli = LitVineCLI(args, run=False)
        assert type(cli.model.algorithm).__name__ == cls
