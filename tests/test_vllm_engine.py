"""VLLMEngine: CPU tests of its pure parts and of its glue code against a fake ``vllm`` module, and
GPU tests against the real vLLM (skipped without vLLM or CUDA).

The fake builds a *freshly initialised* model from the config the engine exports (as vLLM does
with ``load_format="dummy"``) and generates with transformers; so only a working weight sync makes
it sample like the trainer's policy, and the probe must catch a broken one.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass

import pytest
import torch
from transformers import AutoConfig, LlamaForCausalLM

from lit_vine.rollout.engine import HFEngine, SamplingParams
from lit_vine.rollout.vllm import (
    SYNC_TIMEOUT_EXIT_CODE,
    VLLMEngine,
    WeightSyncError,
    check_probe,
    completion_ids,
    prompt_token_logprobs,
    request_seeds,
    sampling_kwargs,
    trainer_token_logprobs,
)

EOS = 2


# ----- pure helpers ------------------------------------------------------------------------------
def test_sampling_kwargs_maps_sampling_and_greedy():
    sampled = sampling_kwargs(SamplingParams(temperature=0.6, top_p=0.9, max_new_tokens=32, n=9), EOS, seed=7)
    assert sampled == {"n": 9, "temperature": 0.6, "top_p": 0.9, "max_tokens": 32, "seed": 7, "stop_token_ids": [EOS], "detokenize": False}
    greedy = sampling_kwargs(SamplingParams(temperature=0.0, top_p=0.5, max_new_tokens=8), EOS, seed=None)
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and greedy["n"] == 1 and greedy["max_tokens"] == 8


def test_request_seeds_are_reproducible_and_distinct():
    assert request_seeds(3, 4) == request_seeds(3, 4)
    assert len(set(request_seeds(3, 100))) == 100
    assert request_seeds(3, 4) != request_seeds(4, 4)


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
        params, loaded = dict(self.hf.named_parameters()), set()
        for name, tensor in weights:
            if self.broken and "layers.1." in name:
                continue  # a loader that silently misses weights
            params[name].data.copy_(tensor)
            loaded.add(name)
        return loaded


class FakeLLM:
    """Just enough of ``vllm.LLM`` for the engine: generate (sampling, greedy, prompt_logprobs),
    apply_model, sleep / wake_up, reset_prefix_cache."""

    include_eos_in_output = True
    broken_loader = False
    instances: list = []

    def __init__(self, **kwargs) -> None:
        self.kwargs, self.calls = kwargs, []
        torch.manual_seed(12345)  # NOT the policy's init: only a weight sync makes them equal
        self.model = FakeVLLMModel(LlamaForCausalLM(AutoConfig.from_pretrained(kwargs["model"])).eval(), self.broken_loader)
        FakeLLM.instances.append(self)

    def apply_model(self, fn):
        self.calls.append("apply_model")
        return [fn(self.model)]

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
                torch.manual_seed((p.seed or 0) + j)
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
    module.SamplingParams = lambda **kw: types.SimpleNamespace(**{"n": 1, "seed": None, "stop_token_ids": None, "prompt_logprobs": None, **kw})
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

    FakeLLM.instances[0].apply_model = failing
    with pytest.raises(WeightSyncError, match="worker died"):
        engine.sync_weights(model)


def test_fake_engine_sleep_mode_sequence(fake_vllm, policy):
    model, tokenizer = policy
    engine = VLLMEngine(dtype="float32", enable_sleep_mode=True)
    engine.setup(model, tokenizer)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=2)
    engine.generate(_prompts(tokenizer, 1), greedy, seed=0)
    llm = FakeLLM.instances[0]
    assert llm.kwargs["enable_sleep_mode"] is True
    llm.calls.clear()
    engine.sleep()  # training starts
    engine.sleep()  # idempotent
    engine.sync_weights(model)  # after training: weights woken first, KV cache before the probe
    engine.generate(_prompts(tokenizer, 1), greedy, seed=0)
    assert llm.calls == ["sleep(1)", "wake_up(weights)", "apply_model", "wake_up(kv_cache)", "reset_prefix_cache", "generate", "generate"]


def test_engine_without_vllm_says_how_to_install(monkeypatch, policy):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    model, tokenizer = policy
    engine = VLLMEngine()
    engine.setup(model, tokenizer)  # constructing and setting up needs no vLLM
    with pytest.raises(ImportError, match=r"lit-vine\[vllm\]"):
        engine.generate([[1, 2]], SamplingParams(), seed=0)


# ----- the real vLLM on a GPU ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_engine():
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM tests need CUDA")
    from lit_vine.models import TinyConfig, build_tiny

    model, tokenizer = build_tiny(TinyConfig())
    model = model.cuda().eval()
    engine = VLLMEngine(dtype="float32", gpu_memory_utilization=0.2, enforce_eager=True, enable_sleep_mode=True)
    engine.setup(model, tokenizer)
    hf = HFEngine()
    hf.setup(model, tokenizer)
    return engine, hf, model, tokenizer


@pytest.mark.slow
def test_vllm_generate_contract_and_seeds(real_engine):
    engine, _, _, tokenizer = real_engine
    prompts = _prompts(tokenizer, 8)
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=12, n=4)
    out = engine.generate(prompts, params, seed=3)
    eos = tokenizer.eos_token_id
    assert len(out) == 8 and all(len(g) == 4 for g in out)
    for group in out:
        for ids in group:
            assert (ids[-1] == eos and eos not in ids[:-1] and len(ids) <= 12) or (eos not in ids and len(ids) == 12)
    assert engine.generate(prompts, params, seed=3) == out
    assert engine.generate(prompts, params, seed=4) != out


@pytest.mark.slow
def test_vllm_greedy_is_deterministic_and_matches_hf_engine(real_engine):
    engine, hf, _, tokenizer = real_engine
    prompts = _prompts(tokenizer, 16)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24)
    first = engine.generate(prompts, greedy, seed=0)
    assert engine.generate(prompts, greedy, seed=1) == first
    reference = hf.generate(prompts, greedy, seed=0)
    agree = sum(a == b for a, b in zip(first, reference))
    assert agree >= 14, f"greedy vLLM and HF agree on only {agree}/16 prompts (fp32; near-ties may flip a few)"


@pytest.mark.slow
def test_vllm_weight_sync_and_probe(real_engine):
    engine, hf, model, tokenizer = real_engine
    prompts = _prompts(tokenizer, 8)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    engine.generate(prompts, greedy, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    with pytest.raises(WeightSyncError, match="probe"):
        engine.probe(model)  # stale
    engine.sleep()
    engine.sync_weights(model)
    assert engine.last_probe_diff < 1e-3
    agree = sum(a == b for a, b in zip(engine.generate(prompts, greedy, seed=0), hf.generate(prompts, greedy, seed=0)))
    assert agree >= 7
