"""Padding-free forward passes: the rows of a padded batch laid end to end.

A batch of episodes is padded to its longest prompt plus its longest response, so a third or more
of its columns are padding (GRPO on the quickstart: 34 %, benchmarks/profile), and every linear layer spends that share of its
work on them. ``pack`` lays the rows' real tokens end to end in as few rows of the longest row's
length as fit (first-fit decreasing), with positions restarting at 0 for every episode; called with
``attention_mask=None``, a transformers model reads those restarts as sequence boundaries and keeps
each token's attention inside its own episode. ``Packed.unpack`` gathers outputs back to the padded
layout. The same episodes, the same math: only the padding's work is gone.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Packed:
    """A padded batch ``(B, W)`` laid end to end in ``R <= B`` rows of length ``L``.

    Attributes:
        input_ids: ``(R, L)`` the real tokens, every episode contiguous, pad after the last.
        position_ids: ``(R, L)`` 0, 1, ... within each episode (and within each row's unused tail).
        index: ``(B, W)`` where padded column ``(b, w)`` sits in the packed rows, as the flat
            position ``r * L + l``; -1 on padding.
    """

    input_ids: Tensor
    position_ids: Tensor
    index: Tensor

    def unpack(self, out: Tensor, columns: slice = slice(None)) -> Tensor:
        """``out`` ``(R, L, ...)`` of the packed rows back at the padded ``columns``: ``(B, C, ...)``.
        Padded places hold some other token's output (finite); callers mask them."""
        index = self.index[:, columns]
        return out.flatten(0, 1)[index.clamp(min=0)]


def pack(input_ids: Tensor, attention_mask: Tensor, pad_id: int = 0) -> Packed:
    """Pack the rows of ``input_ids`` ``(B, W)``, whose ``attention_mask`` is one contiguous run of
    1s per row (left-padded prompt, right-padded response), into rows of the longest row's length."""
    lengths = attention_mask.sum(-1).tolist()
    starts = attention_mask.argmax(-1).tolist()
    L = max(max(lengths), 1)
    used: list[int] = []  # tokens placed in each packed row so far
    place: dict[int, tuple[int, int]] = {}
    for b in sorted(range(len(lengths)), key=lambda b: -lengths[b]):
        row = next((r for r, n in enumerate(used) if n + lengths[b] <= L), None)
        if row is None:
            used.append(0)
            row = len(used) - 1
        place[b] = (row, used[row])
        used[row] += lengths[b]
    ids = torch.full((len(used), L), pad_id, dtype=input_ids.dtype)
    positions = torch.zeros((len(used), L), dtype=torch.long)
    index = torch.full(input_ids.shape, -1, dtype=torch.long)
    span = torch.arange(L)
    src = input_ids.cpu()
    for b, (row, offset) in place.items():
        n, s = lengths[b], starts[b]
        ids[row, offset : offset + n] = src[b, s : s + n]
        positions[row, offset : offset + n] = span[:n]
        index[b, s : s + n] = row * L + offset + span[:n]
    for row, n in enumerate(used):  # the tail: its own segment, so it attends to no episode
        positions[row, n:] = span[: L - n]
    device = input_ids.device
    return Packed(ids.to(device), positions.to(device), index.to(device))


@torch.no_grad()
def packing_works(model: torch.nn.Module) -> bool:
    """Does ``model`` keep packed episodes apart? A packed and a padded forward of three short
    episodes (two of them share a packed row) must give the same logits; a model whose attention
    reads no boundaries from the positions (or older transformers) does not, and a warning says
    that the run trains on padded micro-batches instead."""
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.tensor([[1, 2, 3], [4, 5, 0], [0, 6, 0]]) % vocab
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 1, 0]])
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    was_training = model.training
    model.eval()
    try:
        padded = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=False).logits
        packed = pack(ids, mask)
        out = packed.unpack(model(input_ids=packed.input_ids, attention_mask=None, position_ids=packed.position_ids, use_cache=False).logits)
        real = mask.bool()
        works = bool(torch.allclose(out[real].float(), padded[real].float(), atol=1e-3, rtol=1e-3))
    except Exception as err:  # an architecture that refuses attention_mask=None or these positions
        works, reason = False, repr(err)
    else:
        reason = "its attention does not keep packed episodes apart"
    finally:
        model.train(was_training)
    if not works:
        warnings.warn(f"packing: {type(model).__name__} cannot run packed episodes ({reason}); training on padded micro-batches instead")
    return works
