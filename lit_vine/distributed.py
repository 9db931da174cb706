"""What keeps several processes on one path: agreed counts, pooled statistics, full weights.

A multi-GPU run hangs when ranks disagree on how many collectives they run: under DDP every
backward all-reduces gradients, under FSDP every forward all-gathers parameters, a tensor-parallel
vLLM engine gathers prompts at every call. Ranks hold different data (RestEM keeps different
numbers of correct answers, SPO-tree different numbers of edges, a rank may get only failed or
only correct responses), so every count that drives a collective is agreed first
(:func:`agreed_max`), every decision is taken on pooled numbers (:func:`pooled_sums`), and every
logged key exists on every rank (:func:`pooled_stats`). Without an initialized process group each
helper is the identity.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def _device() -> torch.device:
    """Where a collective's tensors live: the current CUDA device under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def agreed_max(count: int) -> int:
    """The largest ``count`` over all ranks."""
    if not is_distributed():
        return count
    value = torch.tensor([count], dtype=torch.long, device=_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


def pooled_sums(*values: float) -> list[float]:
    """``values`` summed over all ranks, in float64 (for decisions every rank must take alike)."""
    if not is_distributed():
        return [float(v) for v in values]
    stats = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(stats)
    return stats.tolist()


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def pooled_stats(stats: dict[str, float], weights: dict[str, str] | None = None) -> dict[str, float]:
    """Per-iteration statistics of every rank pooled into one dict that every rank holds alike.

    A key is averaged over the ranks that have it (one rank may have no failed response to blame);
    ``weights`` names, per key prefix, the count key that weighs each rank's value (``blame/``
    statistics are means over failed responses: a rank with 1 weighs less than one with 20).
    """
    shards = all_gather_objects(stats)
    weights = weights or {}
    pooled: dict[str, float] = {}
    for key in sorted({k for shard in shards for k in shard}):
        weight_key = next((w for prefix, w in weights.items() if key.startswith(prefix) and key != w), None)
        pairs = [(shard[key], shard.get(weight_key, 0.0) if weight_key else 1.0) for shard in shards if key in shard]
        total = sum(w for _, w in pairs)
        pooled[key] = sum(v * w for v, w in pairs) / total if total else sum(v for v, _ in pairs) / len(pairs)
    return pooled


def equal_shards(items: Sequence[Any], batch_size: int, rank: int, world_size: int) -> list[list[Any]]:
    """Rank ``rank``'s share of ``items`` (every world_size-th, so each item is taken once) in
    batches, as many batches on every rank: a rank with fewer items gets an empty batch at the end,
    because each batch's evaluation runs the engine's collectives (FSDP gathers, tensor-parallel
    vLLM)."""
    mine = list(items[rank::world_size])
    count = -(-len(items[0::world_size]) // batch_size) if items else 0  # rank 0 has the most
    return [mine[start : start + batch_size] for start in range(0, count * batch_size, batch_size)]


def torchrun_environment() -> dict[str, str]:
    """The variables torchrun sets for each process, for code written for it: vLLM's
    ``external_launcher`` reads ``RANK`` and ``LOCAL_RANK``, which Lightning's own launcher and
    SLURM do not set (``MASTER_ADDR``/``MASTER_PORT`` they do, to start the process group)."""
    rank, world_size = rank_and_world_size()
    local = os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID")
    if local is None:
        local = str(torch.cuda.current_device() if torch.cuda.is_available() else 0)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing and world_size > 1:
        raise RuntimeError(f"{' and '.join(missing)} not set: start the processes with Lightning, SLURM or torchrun")
    return {"RANK": str(rank), "LOCAL_RANK": local, "WORLD_SIZE": str(world_size)}


def shard(model: nn.Module, mesh: DeviceMesh, param_dtype: torch.dtype | None) -> None:
    """FSDP2 (``fully_shard``) over ``mesh``: every transformer block (the classes a transformers
    model names in ``_no_split_modules``) its own unit, then the whole model its own root. The
    parameters stay sharded in their dtype (fp32 masters), are gathered in ``param_dtype`` for
    compute, and gradients are reduced in fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    names = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    for block in [m for m in model.modules() if type(m).__name__ in names]:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def all_ranks_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """A one-dimensional mesh over every rank of ``mesh`` (FSDP over all processes)."""
    from torch.distributed.device_mesh import init_device_mesh

    return mesh if mesh.ndim == 1 else init_device_mesh(mesh.device_type, (mesh.size(),))


@contextlib.contextmanager
def full_weights(model: nn.Module) -> Iterator[None]:
    """Within the block, every parameter of a sharded ``model`` is whole on every rank, and
    forwards of it run no collective: what decoding needs, whose ranks take different numbers of
    steps. One all-gather on entering, none inside, a reshard on leaving; every rank must enter.

    FSDP2 (``fully_shard``): unshard every FSDP module and keep it unsharded after forwards. FSDP1:
    ``summon_full_params``. DeepSpeed ZeRO-3: gather all partitioned parameters. Anything else:
    nothing to do.
    """
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1

    fsdp2 = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if fsdp2:
        for module in fsdp2:
            module.set_reshard_after_forward(False, recurse=False)
            module.unshard()
        try:
            yield
        finally:
            for module in fsdp2:
                module.reshard()
                module.set_reshard_after_forward(module is not model, recurse=False)  # FSDP2's own choice: the root stays whole
        return
    if any(isinstance(m, FSDP1) for m in model.modules()):
        with FSDP1.summon_full_params(model, writeback=False, recurse=True):
            yield
        return
    partitioned = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if partitioned:
        import deepspeed

        with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
            yield
        return
    yield


_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """A parameter name without the wrappers' prefixes (FSDP, activation checkpointing, compile)."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def iter_full_parameters(module: torch.nn.Module) -> Iterator[tuple[str, Tensor]]:
    """``(name, full tensor)`` for every parameter of ``module``, gathered where sharded; a tied
    parameter comes once under each of its names (``model.embed_tokens.weight``, ``lm_head.weight``).

    A yielded tensor is valid until the next one is requested (a gathered ZeRO-3 parameter is
    released again): copy it before going on. Under FSDP, FSDP2 or ZeRO-3 this is a collective and
    every rank must run it to the end.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if any(isinstance(m, FSDP) for m in module.modules()):
        with FSDP.summon_full_params(module, writeback=False, recurse=True):
            for name, param in module.named_parameters(remove_duplicate=False):
                if param.numel() == 0:
                    raise RuntimeError(
                        f"parameter {clean_name(name)} is still sharded inside summon_full_params: it belongs to an FSDP "
                        "unit outside the policy. Wrap the whole policy as an FSDP unit, or use FSDP2 "
                        "(configs/strategies/fsdp.yaml)."
                    )
                yield clean_name(name), param.detach()
        return
    for name, param in module.named_parameters(remove_duplicate=False):
        if hasattr(param, "ds_id"):  # DeepSpeed ZeRO-3 partitioned parameter
            import deepspeed

            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                yield clean_name(name), param.detach()
        elif isinstance(param, DTensor):  # FSDP2 (fully_shard) / tensor parallel
            yield clean_name(name), param.full_tensor().detach()
        else:
            yield clean_name(name), param.detach()
