"""`lit-vine test` on GSM8K- and MATH-format files, offline; the paper presets parse and their data
and reward parts build from local files (no model is loaded)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from lit_vine.algorithms import Algorithm
from lit_vine.cli import LitVineCLI
from lit_vine.data import TaskDataModule
from lit_vine.tasks import DatasetTask

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SAMPLES = {"gsm8k": REPO / "tests" / "data" / "gsm8k_sample.jsonl", "math": REPO / "tests" / "data" / "math_sample.jsonl"}


@pytest.mark.parametrize("kind", ["gsm8k", "math"])
def test_lit_vine_test_writes_metrics_and_predictions(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    LitVineCLI(args=["test", "--config", f"tests/configs/eval_{kind}_sample.yaml", "--trainer.logger.init_args.save_dir", str(tmp_path)])
    (log_dir,) = list(tmp_path.glob("*/version_0"))
    problems = [json.loads(line) for line in SAMPLES[kind].read_text().splitlines()]
    predictions = [json.loads(line) for line in (log_dir / "predictions" / "test_iter0000.jsonl").read_text().splitlines()]
    assert len(predictions) == len(problems)
    assert sorted(p["question"] for p in predictions) == sorted(p["question" if kind == "gsm8k" else "problem"] for p in problems)
    assert all(len(p["samples"]) == 2 and "greedy" in p for p in predictions)
    with open(log_dir / "metrics.csv") as f:
        (metrics,) = [row for row in csv.DictReader(f) if row.get("test/greedy_acc")]
    assert {"test/greedy_acc", "test/pass@1", "test/maj@2"} <= {k for k, v in metrics.items() if v}


class ParseOnly(LitVineCLI):
    """The real CLI parser, without building the model or running anything."""

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def local_overrides(preset: str) -> list[str]:
    """Point a preset's data at local files: the shared benchmark files, else the fixtures."""
    key = "--data.init_args.task.init_args."
    if preset.startswith("gsm8k"):
        if (DATA / "gsm8k" / "train.jsonl").is_file():
            return [key + "source", str(DATA / "gsm8k")]
        return [key + "source", "null", key + "train", str(SAMPLES["gsm8k"]), key + "test", str(SAMPLES["gsm8k"]), key + "num_validation", "1"]
    test = DATA / "math500" / "test.jsonl"
    return [key + "source", "null", key + "train", str(SAMPLES["math"]), key + "test", str(test if test.is_file() else SAMPLES["math"]), key + "num_validation", "1"]


@pytest.mark.parametrize("preset", ["gsm8k_rho1b_vineppo", "gsm8k_rho1b_ppo", "math_rho1b_vineppo", "gsm8k_deepseek7b_vineppo", "math_deepseek7b_vineppo", "gsm8k_qwen05b_vineppo"])
def test_presets_parse_and_build_their_data_offline(preset):
    cli = ParseOnly(args=["fit", "--config", str(REPO / "configs" / f"{preset}.yaml"), *local_overrides(preset)])
    config = cli.config.fit
    model = config.model.init_args
    assert (model.learning_rate, model.ppo_epochs, model.mini_batch_size, model.responses_per_prompt) == (1e-6, 2, 64, 8)
    assert (model.temperature, model.top_p) == (0.6, 0.9)
    assert (model.evaluation.num_samples, model.evaluation.temperature) == (16, 0.35)
    assert config.trainer.max_epochs == (650 if preset.startswith("gsm8k") else 1000)
    assert config.data.init_args.prompts_per_iteration == 64
    # the VinePPO reference's training settings (configs/*.yaml name the file of each)
    assert model.lr_schedule.as_dict() == {"warmup_steps": 0, "warmup_ratio": 0.03, "warmup": "log", "decay": "linear"}
    assert (model.kl_coef, model.kl_in, model.kl_estimator, model.kl_clip, model.kl_aggregation) == (1e-4, "loss", "k3", 10.0, "seq_sum")
    assert (model.whiten_advantages, model.max_mean_ratio, model.log_ratio_clip, model.max_new_tokens) == ("mini_batch", 10.0, None, 1024)
    assert config.data.init_args.sample_with_replacement

    parser = ArgumentParser()
    parser.add_argument("--task", type=DatasetTask)
    parser.add_argument("--algorithm", type=Algorithm)
    built = parser.instantiate_classes(parser.parse_object({"task": config.data.init_args.task.as_dict(), "algorithm": model.algorithm.as_dict()}))
    if "vineppo" in preset:
        # GSM8K: states s_0..s_25; MATH: no cap (ref: polIter_*_vineppo_GSM8K.jsonnet, *_MATH.jsonnet)
        assert (built.algorithm.num_mc_rollouts, built.algorithm.max_step_for_value_estimation) == (9, 25 if preset.startswith("gsm8k") else None)
    data = TaskDataModule(task=built.task, prompts_per_iteration=64)
    test = data.task.problems("test")
    assert test and len(data.task.problems("validation")) >= 1
    for problem in test[:20]:  # gold solutions earn the reward under the preset's grader
        assert data.task.reward(problem.solution, problem) == 1.0
    assert data.task.prompt(test[0]).startswith("[MATH_TASK] Problem:\n")
