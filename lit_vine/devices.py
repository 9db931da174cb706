"""Devices and dtypes, decided in one place.

The rules, as the peers (TRL, verl, OpenRLHF, the VinePPO authors' DeepSpeed setup) keep them:

- **Trained models hold fp32 master weights** (policy, critic, the SFT policy), whatever dtype the
  checkpoint was saved in. Hub checkpoints are bf16 and transformers 5 loads them as bf16 unless
  told otherwise, and Lightning's ``bf16-mixed`` is autocast only: a bf16 weight cannot take an
  update of 1e-6 (it rounds back), so the policy would barely learn. ``bf16-true`` casts the fp32
  weights to bf16 on purpose (half the memory; see docs/scaling.md for what it costs).
- **Forwards compute in the trainer's precision** (:func:`compute_dtype`), rollouts, scoring and
  evaluation included (:func:`precision_context`), so that the old policy's, the reference's and
  the loss's log-probs come from the same numerics: the first mini-batch's ratio is 1.
- **The frozen reference lives in the compute dtype** (it is never updated: fp32 would only cost
  memory), on the module's device.
- **Per-token statistics are fp32** (:data:`FLOAT`), made with an explicit dtype and device, and
  masks and ids are integers: nothing in the experience passes through a bf16 cast.
- **RoPE frequencies stay fp32** after a strategy casts a model (:func:`keep_rope_in_float32`).
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from collections.abc import Iterator

import torch
from lightning import Trainer
from torch import nn

FLOAT = torch.float32  # per-token log-probs, values, advantages, returns: never rounded to bf16
TRAINABLE_DTYPE = torch.float32  # master weights of every trained model

_COMPUTE_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16, "64": torch.float64}


def compute_dtype(precision: str | None) -> torch.dtype:
    """The dtype forwards compute in under Lightning's ``trainer.precision`` (``bf16-mixed`` and
    ``bf16-true``: bfloat16; ``16-*``: float16; ``32-true``: float32)."""
    return _COMPUTE_DTYPES.get(str(precision).split("-")[0], torch.float32)


def precision_context(trainer: Trainer | None) -> contextlib.AbstractContextManager:
    """The trainer's forward context (autocast for ``*-mixed``, the default dtype for ``*-true``)
    for model work that runs outside Lightning's ``*_step`` hooks: rollouts, scoring, the test
    report. Lightning already wraps the ``*_step`` hooks in it."""
    plugin = getattr(trainer, "precision_plugin", None) if trainer is not None else None
    return plugin.forward_context() if plugin is not None else contextlib.nullcontext()


def place_frozen(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A frozen model (the reference) on ``device`` in ``dtype``, in eval mode, with RoPE in fp32."""
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    keep_rope_in_float32(model)
    return model


@torch.no_grad()
def keep_rope_in_float32(model: nn.Module) -> int:
    """Give every rotary embedding of ``model`` its fp32 ``inv_freq`` back; returns how many it fixed.

    ``model.to(bf16)`` (``bf16-true``, DeepSpeed, FSDP1's buffer mixed precision) casts buffers too.
    A bf16 ``inv_freq`` carries 8 bits: around position 2,000 the angles drift by about a radian,
    so the trainer's and a vLLM engine's log-probs part on long responses. The frequencies are
    recomputed from the model's config by the function transformers built them with.
    """
    fixed = 0
    for module in model.modules():
        inv_freq = getattr(module, "inv_freq", None)
        if not isinstance(inv_freq, torch.Tensor) or inv_freq.dtype == torch.float32:
            continue
        fresh = _rope_frequencies(module).to(inv_freq.device)
        module.register_buffer("inv_freq", fresh, persistent=False)
        if isinstance(getattr(module, "original_inv_freq", None), torch.Tensor):
            module.register_buffer("original_inv_freq", fresh.clone(), persistent=False)
        fixed += 1
    return fixed


def _rope_frequencies(rotary: nn.Module) -> torch.Tensor:
    """A transformers rotary embedding's ``inv_freq`` in fp32, computed afresh from its config."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope_type = getattr(rotary, "rope_type", "default")
    init = rotary.compute_default_rope_parameters if rope_type == "default" else ROPE_INIT_FUNCTIONS[rope_type]
    inv_freq, _ = init(rotary.config)
    return inv_freq.to(torch.float32)


def activation_dtype(model: nn.Module) -> torch.dtype:
    """The dtype ``model``'s activations (and a KV cache) take in the current context: autocast's
    where it is on for the model's device, else the parameters'."""
    param = next(model.parameters())
    kind = param.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else param.dtype


def memory_budget_gib(device: torch.device, share: float = 0.3, cpu_gib: float = 4.0) -> float:
    """A memory budget for one rollout call: ``share`` of the GPU's free memory now, ``cpu_gib``
    elsewhere."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return share * free / 2**30
    return cpu_gib


def free_cached_memory() -> None:
    """Hand the CUDA caching allocator's free blocks back to the driver, so that another allocator
    in this process (vLLM waking up, colocated) can have them; nothing on a CPU."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----- peak memory per phase -------------------------------------------------------------------
def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: ``torch.cuda.reset_peak_memory_stats`` on CUDA; on Linux the process's
    peak resident set (``VmHWM``) is reset to the current one (``/proc/self/clear_refs``, value 5)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif sys.platform.startswith("linux"):
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory since the last :func:`reset_peak_memory`, in GiB: CUDA memory allocated by
    tensors on a GPU, the process's peak resident set elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    for line in _proc_status():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux reports KiB


def _proc_status() -> Iterator[str]:
    path = f"/proc/{os.getpid()}/status"
    if os.path.exists(path):
        with open(path) as f:
            yield from f
