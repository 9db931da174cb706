"""HFEngine: the generation contract on the tiny policy."""

import torch

from lit_vine.rollout.engine import HFEngine, SamplingParams


def test_the_context_bounds_every_request(tiny):
    model, tok = tiny  # context of 256 positions
    engine = HFEngine()
    engine.setup(model, tok)
    context = model.config.max_position_embeddings
    near_end = [tok.bos_token_id] + [5] * (context - 4)  # 3 positions left
    short = [tok.bos_token_id, 7, 8]
    torch.manual_seed(0)
    out = engine.generate([near_end, short, near_end], SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16, n=3), seed=0)
    assert all(len(c) <= 3 for c in out[0] + out[2])
    assert max(len(c) for c in out[1]) > 3  # the short prompt is not held back by its neighbours
    full = [tok.bos_token_id] + [5] * (context - 1)
    assert engine.generate([full], SamplingParams(max_new_tokens=4, n=2), seed=0) == [[[], []]]


# ----- decoding="fork": one prefill per prompt, finished rows leave the batch -----------------------
import math  # noqa: E402

import pytest  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache  # noqa: E402

from conftest import REPO  # noqa: E402

SFT = str(REPO / "checkpoints" / "sft-arith")


@pytest.fixture(scope="module")
def sft():
    return AutoModelForCausalLM.from_pretrained(SFT).eval(), AutoTokenizer.from_pretrained(SFT)


def engines(model, tokenizer):
    fork, generate = HFEngine(decoding="fork"), HFEngine(decoding="generate")
    fork.setup(model, tokenizer)
    generate.setup(model, tokenizer)
    return fork, generate


def prompts(tokenizer, n=24):
    # different lengths: left padding inside a batch
    return [tokenizer(f"Compute {10 + i} +{i % 9 + 1} *{i % 3 + 2} -{i % 5 + 1} from left to right.\n" + "7+1=8\n" * (i % 3)).input_ids for i in range(n)]


@torch.inference_mode()
def test_a_forked_kv_cache_gives_the_logits_of_a_fresh_prefill(sft):
    model, tokenizer = sft
    prompt = torch.tensor([tokenizer("Compute 12 +7 *3 -5 from left to right.\n12+7=19\n").input_ids])
    cache = DynamicCache(config=model.config)
    model(input_ids=prompt, past_key_values=cache, use_cache=True)
    cache.batch_repeat_interleave(3)  # the fork, to 3 continuations with different next tokens
    nxt = torch.tensor([[5], [17], [30]])
    forked = model(input_ids=nxt, attention_mask=torch.ones(3, prompt.shape[1] + 1, dtype=torch.long), past_key_values=cache, use_cache=True).logits[:, -1]
    fresh = model(input_ids=torch.cat([prompt.repeat(3, 1), nxt], 1)).logits[:, -1]
    torch.testing.assert_close(forked, fresh, rtol=1e-5, atol=1e-5)


def test_fork_greedy_is_token_identical_to_generate(sft):
    fork, generate = engines(*sft)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=48)
    expected = generate.generate(prompts(sft[1]), greedy, seed=0)
    assert fork.generate(prompts(sft[1]), greedy, seed=0) == expected
    # n greedy samples of a prompt are all that prompt's greedy completion
    forked = fork.generate(prompts(sft[1]), greedy.with_(n=3), seed=0)
    assert all(group == [single[0]] * 3 for group, single in zip(forked, expected))


def test_finished_rows_leave_the_batch(sft):
    model, tokenizer = sft
    fork, _ = engines(model, tokenizer)
    widths = []
    hook = model.model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        out = fork.generate(prompts(tokenizer, 8), SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=48, n=4), seed=0)
    finally:
        hook.remove()
    lengths = sorted(len(c) for group in out for c in group)  # a row that ends samples EOS at step length - 1
    k = fork.sync_every  # the decoder looks at which rows ended after every k-th token only

    def first_look(length: int) -> int:  # the step at which the decoder sees a row of this length ended
        return min(-(-length // k) * k - 1, 47)

    assert widths[0] == 8 and widths[1] == 32  # one prefill of the 8 prompts, then 4 rows each
    assert all(a >= b for a, b in zip(widths[1:], widths[2:])) and widths[-1] < 32  # it only shrinks
    assert len(widths) == 1 + first_look(lengths[-1])  # decoding stops once it sees the longest completion ended
    assert widths.count(32) == first_look(lengths[7])  # full width until it sees a quarter of the 32 rows ended


def test_sampled_mc_values_of_both_decodings_agree(sft):
    """Values of 12 states from 96 samples each: per state and pooled, the difference of the two
    engines' success rates stays within 4 standard errors of the binomial difference."""
    from lit_vine import ArithmeticTask

    model, tokenizer = sft
    fork, generate = engines(model, tokenizer)
    task = ArithmeticTask(num_train=12, num_validation=0, num_test=0, seed=5)
    problems = task.problems("train")
    states = [task.prompt_ids(p, tokenizer) + tokenizer("\n".join(p.solution.splitlines()[: i % 3]), add_special_tokens=False).input_ids for i, p in enumerate(problems)]
    params, n = SamplingParams(temperature=0.6, top_p=0.9, max_new_tokens=64, n=96), 96

    def values(engine, seed):
        out = engine.generate(states, params, seed=seed)
        return [sum(task.score(c, p, tokenizer)[1] for c in group) / n for group, p in zip(out, problems)]

    a, b = values(fork, 1), values(generate, 2)
    for p, q in zip(a, b):
        pooled = (p + q) / 2
        assert abs(p - q) <= 4 * math.sqrt(max(pooled * (1 - pooled), 1 / n) * 2 / n), (a, b)
    mean = sum(a + b) / (2 * len(a))
    assert abs(sum(a) - sum(b)) / len(a) <= 4 * math.sqrt(max(mean * (1 - mean), 1 / n) * 2 / (n * len(a)))
    assert 0.05 < mean < 0.95  # the states are neither sure wins nor sure losses: the check has teeth


def test_fork_hands_over_the_log_probs_a_forward_gives(sft):
    """Each sampled token's log-prob under softmax(logits / T) from a full forward of prompt +
    completion equals the one the fork decoder hands over (RLModule then skips that forward)."""
    model, tok = sft
    fork, generate = engines(model, tok)
    prompts = [tok("12+7=").input_ids, tok("3+45+6=").input_ids]
    params = SamplingParams(temperature=0.6, top_p=0.9, max_new_tokens=30, n=3, logprobs=True)
    out = fork.generate(prompts, params, seed=0)
    checked = 0
    for prompt, group in zip(prompts, out):
        for completion in group:
            assert len(completion.logprobs) == len(completion) > 0
            ids = torch.tensor([prompt + list(completion)])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
            expected = torch.log_softmax(logits / 0.6, -1).gather(-1, ids[0, len(prompt) :, None])[:, 0]
            torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-5, rtol=1e-5)
            checked += len(completion)
    assert checked > 20
    assert fork.generate(prompts, params.with_(logprobs=False), seed=0)[0][0].logprobs is None
    assert getattr(generate.generate(prompts, params, seed=0)[0][0], "logprobs", None) is None  # recomputed by the trainer


class HostSyncs(torch.overrides.TorchFunctionMode):
    """Counts the calls that make the host wait for the device (on a GPU: a stalled queue at each):
    reading a tensor back (``item``, ``tolist``, ``bool``/``int``/``float`` of one), ``nonzero`` and
    indexing with a boolean mask, whose result's size only the device knows. Calls made inside the
    model's own forward are the model's business and are not counted."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__,
             torch.Tensor.nonzero, torch.nonzero, torch.Tensor.masked_select, torch.masked_select}

    def __init__(self, model) -> None:
        super().__init__()
        self.count, self.inside_model = 0, 0
        self.hooks = [model.register_forward_pre_hook(lambda *a: self._enter()), model.register_forward_hook(lambda *a: self._leave())]

    def _enter(self) -> None:
        self.inside_model += 1

    def _leave(self) -> None:
        self.inside_model -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not self.inside_model:
            boolean_index = func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if isinstance(args[1], tuple) else (args[1],)))
            self.count += func in self.READS or boolean_index
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("logprobs", [False, True])
def test_fork_decoding_reads_back_from_the_device_rarely(sft, logprobs):
    """28070cc read five values back per generated token (alive rows, tokens, log-probs, any,
    count); the decoder now keeps tokens on the device and looks once every ``sync_every`` tokens."""
    model, tokenizer = sft
    fork, _ = engines(model, tokenizer)
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=48, n=4, logprobs=logprobs)
    counter = HostSyncs(model)
    try:
        with counter:
            out = fork.generate(prompts(tokenizer, 8), params, seed=0)
    finally:
        for hook in counter.hooks:
            hook.remove()
    steps = max(len(c) for group in out for c in group)  # decoding steps the batch ran (at least)
    assert counter.count <= steps / fork.sync_every + 8, f"{counter.count} reads back for {steps} decoding steps"
