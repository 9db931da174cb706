"""Prompt formats: the paper's zero-shot template, few-shot with worked train examples, and the
tokenizer's chat template for instruct models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

PAPER_TEMPLATE = "[MATH_TASK] Problem:\n{query}\n\nSolution:"


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes the text the policy continues.

    Args:
        style: ``zero_shot``: ``template`` with the question; ``few_shot``: ``num_shots`` solved
            train examples (each ``template`` + " " + solution, separated by ``separator``), then
            the question; ``chat``: ``template`` with the question is the user message of the
            tokenizer's chat template (``add_generation_prompt=True``).
        template: text with a ``{query}`` slot (replaced literally, so LaTeX braces are safe).
        num_shots: examples for ``few_shot``; drawn once from train with the task's seed.
        separator: between few-shot examples.
    """

    style: Literal["zero_shot", "few_shot", "chat"] = "zero_shot"
    template: str = PAPER_TEMPLATE
    num_shots: int = 4
    separator: str = "\n\n\n"

    def __post_init__(self) -> None:
        if "{query}" not in self.template:
            raise ValueError(f"prompt.template must contain '{{query}}', got {self.template!r}")
        if self.style == "few_shot" and self.num_shots < 1:
            raise ValueError(f"prompt.num_shots must be >= 1 for few_shot, got {self.num_shots}")

    def fill(self, question: str) -> str:
        return self.template.replace("{query}", question)

    def text(self, question: str, shots: list[tuple[str, str]] = ()) -> str:
        """The prompt text (for ``chat``: the user message); ``shots`` are (question, solution)."""
        examples = [f"{self.fill(q)} {solution.strip()}" for q, solution in shots]
        return self.separator.join(examples + [self.fill(question)])

    def ids(self, text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Token ids of a prompt built by :meth:`text`."""
        if self.style != "chat":
            return tokenizer(text).input_ids
        if tokenizer.chat_template is None:
            raise ValueError("prompt.style is 'chat' but the policy's tokenizer has no chat template")
        chat = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        # The rendered template already holds BOS and the role markers: add no special tokens.
        return tokenizer(chat, add_special_tokens=False).input_ids
