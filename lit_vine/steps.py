"""Split a response into reasoning steps (VinePPO, Kazemnejad et al. 2024, Sec. 4).

Every splitter returns pieces that join back to the input exactly, so a step boundary is a character
offset into the response; :func:`step_token_ends` maps those offsets onto the sampled token ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


def split_lines(text: str) -> list[str]:
    """GSM8K rule: one step per line.

    Leading empty pieces are merged into the first step and a final ``#### answer`` line into the
    last step, so the answer line never becomes a state of its own.
    """
    pieces = text.splitlines(keepends=True)
    steps: list[str] = []
    for piece in pieces:
        if steps and (not steps[-1].strip() or piece.lstrip().startswith("####")):
            steps[-1] += piece
        else:
            steps.append(piece)
    return steps


def step_token_ends(
    response_ids: Sequence[int], steps: Sequence[str], tokenizer: PreTrainedTokenizerBase
) -> list[int]:
    """Token count at which each step ends: ``ends[i]`` tokens of the response cover steps 0..i.

    A boundary that falls inside a token is moved to the end of that token, so every state
    ``response_ids[:ends[i]]`` is a prefix the policy actually produced. The last end is always
    ``len(response_ids)``; ends are strictly increasing (steps that collapse onto one token merge).
    """
    n = len(response_ids)
    prefix_len = {0: 0}

    def decoded_len(k: int) -> int:
        if k not in prefix_len:
            prefix_len[k] = len(tokenizer.decode(response_ids[:k], skip_special_tokens=True))
        return prefix_len[k]

    ends: list[int] = []
    offset = 0
    for step in steps[:-1]:
        offset += len(step)
        lo, hi = (ends[-1] if ends else 0), n  # smallest k with decoded_len(k) >= offset
        while lo < hi:
            mid = (lo + hi) // 2
            if decoded_len(mid) >= offset:
                hi = mid
            else:
                lo = mid + 1
        if 0 < lo < n and (not ends or lo > ends[-1]):
            ends.append(lo)
    ends.append(n)
    return ends
