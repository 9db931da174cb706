"""What a task is to the trainer: problems, a prompt, a reward and a step splitter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from lit_vine.faults import guarded_reward

Split = Literal["train", "validation", "test"]


@dataclass(frozen=True)
class Problem:
    """One question. ``solution`` is a worked gold solution (used by SFT), ``answer`` the final one."""

    id: str
    question: str
    answer: str
    solution: str = ""


class Task:
    """Base class of tasks. Subclasses define where problems come from and how answers are graded.

    ``on_reward_error`` (``stop`` | ``zero``) and ``reward_time_limit`` (seconds, ``None``: none)
    say what :meth:`score` does when ``reward`` raises, returns NaN or hangs: stop the run with an
    error naming the problem, or score the response 0 and go on (see ``lit_vine.faults``).
    """

    on_reward_error: Literal["stop", "zero"] = "stop"
    reward_time_limit: float | None = None

    def problems(self, split: Split) -> list[Problem]:
        raise NotImplementedError

    def prompt(self, problem: Problem) -> str:
        """The text the policy continues."""
        raise NotImplementedError

    def prompt_ids(self, problem: Problem, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Token ids of the prompt; tasks with chat templates or prompt-length rules override it."""
        return tokenizer(self.prompt(problem)).input_ids

    def prepare(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Called by ``TaskDataModule.setup`` once the policy's tokenizer is known, before any
        problem is served (a task may drop or truncate prompts that are too long)."""

    def reward(self, response: str, problem: Problem) -> float:
        """1.0 for a correct final answer in ``response``, else 0.0."""
        raise NotImplementedError

    def split_steps(self, response: str) -> list[str]:
        """Reasoning steps of ``response``; they join back to ``response``."""
        raise NotImplementedError

    def extract_answer(self, response: str) -> str | None:
        """The final answer written in ``response`` (for majority voting); ``None`` if none."""
        raise NotImplementedError

    checks_steps: bool = False  # tasks that can tell which step of a response went wrong

    def first_wrong_step(self, response: str, problem: Problem) -> int | None:
        """Index of the first wrong step of ``response`` (in ``split_steps`` order), ``None`` if all
        are right. Only for tasks with ``checks_steps``; ``lit_vine.blame`` uses it."""
        raise NotImplementedError

    def rewards(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        """Rewards of finished responses: :meth:`reward` of each under the task's error policy; a
        task with a batched grader grades them together."""
        return [guarded_reward(self, text, problem) for text, problem in zip(responses, problems)]

    def score(self, response_ids: Sequence[int], problem: Problem, tokenizer: PreTrainedTokenizerBase) -> tuple[str, float]:
        """Decode a sampled response and grade it; a response cut off before EOS scores 0."""
        return self.score_many([(response_ids, problem)], tokenizer)[0]

    def score_many(self, episodes: Sequence[tuple[Sequence[int], Problem]], tokenizer: PreTrainedTokenizerBase) -> list[tuple[str, float]]:
        """:meth:`score` of many sampled responses, the finished ones graded in one :meth:`rewards` call."""
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in episodes]
        finished = [i for i, (ids, _) in enumerate(episodes) if len(ids) > 0 and ids[-1] == tokenizer.eos_token_id]
        rewards = [0.0] * len(episodes)
        for i, reward in zip(finished, self.rewards([texts[i] for i in finished], [episodes[i][1] for i in finished])):
            rewards[i] = reward
        return list(zip(texts, rewards))
