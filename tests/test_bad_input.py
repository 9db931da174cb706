"""Bad input stops with a short message that says what and where, or is handled without losing the run."""

from __future__ import annotations

import json

import pytest

from conftest import REPO
from lit_vine import Problem, RLModule
from lit_vine.cli import main
from lit_vine.errors import ConfigError
from lit_vine.faults import RewardError, check_responses, fit_prompt
from lit_vine.tasks.dataset import DatasetTask

SFT = str(REPO / "checkpoints" / "sft-arith")


def cli_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("trainer: [\n  max_epochs: 1\n", "Problems parsing config"),
        ("trainer:\n  max_epochs: 1\n  bogus_key: 3\n", "does not accept option 'trainer.bogus_key'"),
        ("model:\n  class_path: lit_vine.RLModule\n  init_args: {bogus: 3}\n", "class_path 'lit_vine.RLModule': Option 'bogus' is not accepted"),
    ],
    ids=["malformed", "unknown-trainer-key", "unknown-model-key"],
)
def test_bad_yaml_gives_one_short_message(yaml_text, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    err = cli_error(["fit", "--config", "configs/quickstart.yaml", "--config", str(bad)], capsys)
    assert message in err and err.startswith("lit-vine: error: ")
    assert "usage:" not in err and len(err.splitlines()) <= 8, err


def test_bad_dataset_row_is_reported_by_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    rows = [{"question": "1+1?", "solution": "#### 2", "answer": "2"}, {"question": "2+2?", "solution": "#### 4"}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    err = cli_error([
        "fit", "--config", "configs/quickstart.yaml", "--trainer.max_epochs", "1", "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
        "--data.task", "lit_vine.tasks.dataset.DatasetTask", "--data.task.train", str(tmp_path / "train.jsonl"),
        "--data.task.test", str(tmp_path / "train.jsonl"),
    ], capsys)
    assert "train.jsonl, row 2: field 'answer' (answer) is missing" in err


def test_non_utf8_and_empty_text_rows(tmp_path):
    (tmp_path / "latin.jsonl").write_bytes(b'{"question": "ok", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"latin.jsonl, line 2: not valid UTF-8"):
        DatasetTask(train=str(tmp_path / "latin.jsonl"), test=None, solution_field=None).problems("train")
    (tmp_path / "empty.jsonl").write_text('{"question": "  ", "answer": "1"}\n')
    with pytest.raises(ValueError, match=r"empty.jsonl, row 1: field 'question' \(question\) is empty"):
        DatasetTask(train=str(tmp_path / "empty.jsonl"), test=None, solution_field=None).problems("train")


# ----- rewards -----------------------------------------------------------------------------------
def task_with(grader: str, **kwargs) -> DatasetTask:
    return DatasetTask(train=None, test=None, solution_field=None, grader=f"faulty_rewards:{grader}", **kwargs)


PROBLEM = Problem("train-7", "1+1?", "2")


@pytest.mark.parametrize("grader, message", [
    ("raises", "reward for problem 'train-7' raised KeyError: 'no such field'"),
    ("nan", "reward for problem 'train-7' raised ValueError: reward is nan"),
])
def test_reward_that_raises_stops_naming_the_problem(grader, message, tiny):
    _, tokenizer = tiny
    ids = tokenizer("#### 2").input_ids + [tokenizer.eos_token_id]
    with pytest.raises(RewardError, match=message.replace("(", r"\(")):
        task_with(grader).score(ids, PROBLEM, tokenizer)
    zero = task_with(grader, on_reward_error="zero")
    assert zero.score(ids, PROBLEM, tokenizer)[1] == 0.0 and zero.reward_errors == 1


def test_reward_that_hangs_times_out(tiny):
    _, tokenizer = tiny
    ids = tokenizer("#### 2").input_ids + [tokenizer.eos_token_id]
    with pytest.raises(RewardError, match="reward for problem 'train-7' timed out"):
        task_with("hangs", reward_time_limit=0.2).score(ids, PROBLEM, tokenizer)
    assert task_with("hangs", reward_time_limit=0.2, on_reward_error="zero").score(ids, PROBLEM, tokenizer)[1] == 0.0


def test_reward_error_in_a_run_names_the_problem(monkeypatch):
    from test_faults import module, run

    m = module()
    monkeypatch.setattr("lit_vine.tasks.arithmetic.ArithmeticTask.reward", lambda self, response, problem: 1 / 0)
    with pytest.raises(RewardError, match=r"reward for problem '.*' raised ZeroDivisionError"):
        run(m)


# ----- prompts and responses ---------------------------------------------------------------------
def test_prompt_longer_than_the_context_is_cut_with_a_warning():
    seen: set[str] = set()
    with pytest.warns(UserWarning, match=r"problem 'p1': prompt of 10 tokens \+ max_new_tokens does not fit"):
        assert fit_prompt([1, 5, 6, 7, 8, 9, 10, 11, 12, 13], "p1", 4, bos=1, seen=seen) == [1, 11, 12, 13]
    assert fit_prompt([5, 6], "p2", 4, bos=1, seen=seen) == [5, 6]
    with pytest.raises(ConfigError, match="max_new_tokens=256 leaves no room for a prompt in the policy's context of 256"):
        RLModule(policy=SFT, max_new_tokens=256)


@pytest.mark.parametrize("kind", ["only_eos", "never_stops"])
def test_degenerate_responses_warn_and_the_run_goes_on(kind):
    from lit_vine import RolloutCallback, RolloutEngine, VinePPO
    from test_faults import module, run

    m = module(algorithm=VinePPO(num_mc_rollouts=2, max_step_for_value_estimation=2), max_new_tokens=12)
    eos, filler = m.tokenizer.eos_token_id, m.tokenizer("1\n").input_ids[-2:]

    class Degenerate(RolloutEngine):
        def generate(self, prompts, params, seed):
            response = [eos] if kind == "only_eos" else (filler * params.max_new_tokens)[: params.max_new_tokens]
            return [[list(response) for _ in range(params.n)] for _ in prompts]

    expected = "every response is empty" if kind == "only_eos" else "no response stopped within max_new_tokens=12"
    with pytest.warns(UserWarning, match=expected):
        trainer = run(m, callbacks=[RolloutCallback(Degenerate())])
    assert trainer.global_step == 4 and float(trainer.logged_metrics["rollout/reward"]) == 0.0
    assert float(trainer.logged_metrics["rollout/empty" if kind == "only_eos" else "rollout/truncated"]) == 1.0


def test_check_responses_fractions():
    assert check_responses([[2], [5, 2], [5, 5]], eos=2, max_new_tokens=2, iteration=0) == {"rollout/empty": 1 / 3, "rollout/truncated": 1 / 3}
