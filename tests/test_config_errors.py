"""Bad configuration values stop the run with an error that names the field."""

import pytest

from conftest import REPO
from lit_vine.cli import main


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


def test_unknown_algorithm_lists_the_valid_ones(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        main(["fit", "--config", "configs/quickstart.yaml", "--model.algorithm", "PPOX"])
    err = capsys.readouterr().err
    assert "VinePPO" in err and "PPO" in err
