"""Held-out evaluation: greedy accuracy, pass@1 over n samples and majority vote (maj@n)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lit_vine.rollout.engine import RolloutEngine, SamplingParams
from lit_vine.tasks.base import Problem, Task


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation sampling. The paper: 16 samples at temperature 0.35, top_p 0.9, pass@1."""

    num_samples: int = 16
    temperature: float = 0.35
    top_p: float = 0.9
    greedy: bool = True

    def __post_init__(self) -> None:
        if self.num_samples < 0:
            raise ValueError(f"evaluation.num_samples must be >= 0, got {self.num_samples}")
        if self.num_samples == 0 and not self.greedy:
            raise ValueError("evaluation: num_samples = 0 and greedy = false leaves nothing to evaluate")


def evaluate(
    problems: list[Problem],
    prompts: list[list[int]],
    task: Task,
    engine: RolloutEngine,
    tokenizer: PreTrainedTokenizerBase,
    config: EvalConfig,
    max_new_tokens: int,
    seed: int,
) -> list[dict]:
    """One record per problem: its responses, their correctness and the three accuracies."""
    records = [{"id": p.id, "question": p.question, "answer": p.answer} for p in problems]
    if config.greedy:
        greedy = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens), seed)
        for rec, (text, reward) in zip(records, task.score_many([(ids, p) for p, (ids,) in zip(problems, greedy)], tokenizer)):
            rec["greedy"], rec["greedy_correct"] = text, reward
    if config.num_samples:
        params = SamplingParams(config.temperature, config.top_p, max_new_tokens, n=config.num_samples)
        sampled = engine.generate(prompts, params, seed + 1)
        graded = task.score_many([(ids, p) for p, samples in zip(problems, sampled) for ids in samples], tokenizer)
        n = config.num_samples
        for k, rec in enumerate(records):
            scored = graded[k * n : (k + 1) * n]
            rec["samples"] = [text for text, _ in scored]
            rec["samples_correct"] = [reward for _, reward in scored]
            rec["pass@1"] = sum(rec["samples_correct"]) / len(scored)
            answers = [task.extract_answer(text) for text, _ in scored]
            votes = Counter(a for a in answers if a is not None)
            # maj@n: grade the response that carries the most common answer (0 if none answered).
            rec[f"maj@{config.num_samples}"] = (
                scored[answers.index(votes.most_common(1)[0][0])][1] if votes else 0.0
            )
    return records


def summarize(records: list[dict]) -> dict[str, float]:
    """Mean of every accuracy field over problems."""
    keys = [k for k in records[0] if k == "greedy_correct" or k == "pass@1" or k.startswith("maj@")] if records else []
    names = {"greedy_correct": "greedy_acc"}
    return {names.get(k, k): sum(r[k] for r in records) / len(records) for k in keys}
