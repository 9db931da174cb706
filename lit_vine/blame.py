"""Step blame: does an advantage estimator blame the step that actually went wrong?

For a task that can check every step (``Task.checks_steps``), each failed response has a first
wrong step w. An estimator *blames* a step when that step has the response's most negative
per-step advantage (the mean of the step's token advantages). Blame accuracy is the share of failed
responses whose blamed step is w; a tie among k steps that include w counts 1/k, so an
outcome-level method (GRPO, RLOO: one advantage for every token) scores exactly the chance level,
the mean of 1/n over the failed responses. For PPO this measures the critic's GAE advantages.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lit_vine.steps import step_token_ends
from lit_vine.tasks.base import Problem, Task


def step_means(advantages: Tensor, ends: Sequence[int]) -> list[float]:
    """Mean advantage of each step's tokens; ``advantages`` is one response's ``(T,)`` row."""
    starts = [0, *ends[:-1]]
    return [float(advantages[a:b].mean()) for a, b in zip(starts, ends)]


def credit(step_advantages: Sequence[float], wrong: int) -> float:
    """1/k if the wrong step is among the k steps with the lowest advantage, else 0."""
    lowest = min(step_advantages)
    blamed = [i for i, a in enumerate(step_advantages) if a == lowest]
    return 1 / len(blamed) if wrong in blamed else 0.0


def blame_statistics(
    problems: Sequence[Problem],
    response_ids: Sequence[Sequence[int]],
    texts: Sequence[str],
    scores: Tensor,
    advantages: Tensor,
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
) -> dict[str, float]:
    """Blame accuracy, its chance level and mean step advantages, for one batch of episodes.

    Args:
        advantages: ``(B, T)`` per-token advantages as the estimator made them (before whitening,
            which shifts and scales every step alike and so blames the same step).
    Returns ``blame/failed_responses`` (the failed responses with a known first wrong step) and,
    where there is data for them, ``blame/accuracy``, ``blame/chance``, the mean step advantage of
    first wrong steps (``blame/advantage_wrong_step``) and of right steps, those before it and all
    steps of correct responses (``blame/advantage_right_steps``).
    """
    eos = tokenizer.eos_token_id
    accuracy, chance, wrong_adv, right_adv = [], [], [], []
    for problem, ids, text, score, row in zip(problems, response_ids, texts, scores.tolist(), advantages.cpu()):
        steps = task.split_steps(text)
        if not steps or not ids:
            continue
        body = ids[:-1] if ids[-1] == eos else ids
        ends = step_token_ends(body, steps, tokenizer)
        ends[-1] = len(ids)  # EOS belongs to the last step, as for VinePPO
        per_step = step_means(row, ends)
        wrong = task.first_wrong_step(text, problem) if score <= 0 else None
        if wrong is None:
            right_adv += per_step if score > 0 else []
            continue
        wrong = min(wrong, len(per_step) - 1)  # steps that merged onto one token are one step here
        accuracy.append(credit(per_step, wrong))
        chance.append(1 / len(per_step))
        wrong_adv.append(per_step[wrong])
        right_adv += per_step[:wrong]
    stats = {"blame/failed_responses": float(len(accuracy))}
    for name, values in (("accuracy", accuracy), ("chance", chance), ("advantage_wrong_step", wrong_adv), ("advantage_right_steps", right_adv)):
        if values:
            stats[f"blame/{name}"] = sum(values) / len(values)
    return stats

