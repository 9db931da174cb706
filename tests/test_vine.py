"""VinePPO's estimator on a fake engine whose continuations are known, so values are exact."""

import torch

from lit_vine.algorithms import RolloutContext, VinePPO
from lit_vine.experience import Rollouts, pad_batch
from lit_vine.rollout.engine import RolloutEngine, SamplingParams
from lit_vine.steps import split_lines
from lit_vine.tasks.base import Problem, Task

EOS = 99


class CharTokenizer:
    """One token per character (ids = ord), EOS = 99 ('c' is not used in texts)."""

    eos_token_id = EOS

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == EOS))


class LineTask(Task):
    """Reward 1 if the response's last line is the answer."""

    def reward(self, response, problem):
        return float(response.rsplit("\n", 1)[-1] == problem.answer)

    def split_steps(self, response):
        return split_lines(response)


class ScriptedEngine(RolloutEngine):
    """Continues a prefix with a fixed table: half of the K samples from a 'good' state succeed."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def generate(self, prompts, params, seed):
        self.calls.append((len(prompts), params.n))
        out = []
        for p in prompts:
            text = CharTokenizer().decode(p)
            conts = self.table[text]
            out.append([[ord(ch) for ch in conts[j % len(conts)]] + [EOS] for j in range(params.n)])
        return out


def make_rollouts(prompt, responses, scores):
    tok = CharTokenizer()
    p_ids = [ord(c) for c in prompt]
    r_ids = [[ord(c) for c in r] + [EOS] for r in responses]
    input_ids, attention, rmask = pad_batch([p_ids] * len(r_ids), r_ids, pad_id=0)
    T = rmask.shape[1]
    scores = torch.tensor(scores)
    lengths = rmask.sum(-1).long()
    token_rewards = torch.zeros_like(rmask)
    token_rewards[torch.arange(len(lengths)), lengths - 1] = scores
    return Rollouts(
        problems=[Problem("p", prompt, "z")] * len(r_ids),
        group=torch.zeros(len(r_ids), dtype=torch.long),
        prompt_ids=[p_ids] * len(r_ids),
        response_ids=r_ids,
        texts=[tok.decode(r) for r in r_ids],
        scores=scores,
        input_ids=input_ids,
        attention_mask=attention,
        response_mask=rmask,
        old_logprobs=torch.zeros(len(r_ids), T),
        ref_logprobs=torch.zeros(len(r_ids), T),
        token_rewards=token_rewards,
    )


def test_vine_mc_values_advantages_and_dedup():
    prompt = "Q\n"
    # Two responses share their first step "a\n" -> the states s_0 and s_1 = "a\n" are shared.
    responses = ["a\nb\nz", "a\nd\nx"]
    table = {
        "Q\n": ["a\nb\nz", "a\nd\nx"],  # V(s_0) = 1/2
        "Q\na\n": ["b\nz", "b\nz", "d\nx", "d\nx"],  # V(s_1) = 1/2
        "Q\na\nb\n": ["z"],  # V = 1
        "Q\na\nd\n": ["x"],  # V = 0
    }
    engine = ScriptedEngine(table)
    ctx = RolloutContext(engine, CharTokenizer(), LineTask(), SamplingParams(max_new_tokens=32), seed=0)
    rollouts = make_rollouts(prompt, responses, [1.0, 0.0])
    adv, returns = VinePPO(num_mc_rollouts=4).advantages(rollouts, ctx)
    assert returns is None
    # All MC requests go to the engine in one batch, each unique state once: 4 states, not 6.
    assert engine.calls == [(4, 4)]
    assert ctx.stats["vine/mc_requests"] == 4 and ctx.stats["vine/mc_dedup_saved"] == 2
    # Episode 0 steps: "a\n"(2 tokens) "b\n"(2) "z"+EOS(2): A = [0.5-0.5, 1-0.5, 1+0-1]
    assert torch.allclose(adv[0, :6], torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0, 0.0]))
    # Episode 1: A = [0, 0 - 0.5, 0 + 0 - 0]
    assert torch.allclose(adv[1, :6], torch.tensor([0.0, 0.0, -0.5, -0.5, 0.0, 0.0]))


def test_vine_max_steps_caps_estimated_states():
    prompt = "Q\n"
    table = {"Q\n": ["a\nb\nz", "q"], "Q\na\n": ["b\nz"]}
    engine = ScriptedEngine(table)
    ctx = RolloutContext(engine, CharTokenizer(), LineTask(), SamplingParams(max_new_tokens=32), seed=0)
    rollouts = make_rollouts(prompt, ["a\nb\nz"], [1.0])
    adv, _ = VinePPO(num_mc_rollouts=2, max_steps=2).advantages(rollouts, ctx)
    # States s_0 (V=1/2), s_1 (V=1) estimated; s_2 past the cap gets V = R = 1, so A_2 = 0.
    assert engine.calls == [(2, 2)]
    assert torch.allclose(adv[0, :6], torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0, 0.0]))


def test_vine_truncated_continuations_score_zero():
    # an MC continuation that would be correct but exceeds the token budget counts as unfinished
    table = {"Q\n": ["a\nb\nz"]}
    engine = ScriptedEngine(table)
    ctx = RolloutContext(engine, CharTokenizer(), LineTask(), SamplingParams(max_new_tokens=3), seed=0)
    rollouts = make_rollouts("Q\n", ["z"], [1.0])
    adv, _ = VinePPO(num_mc_rollouts=1).advantages(rollouts, ctx)
    # V(s_0) = 0 because the continuation was cut at 3 tokens; A_0 = 1 - 0
    assert torch.allclose(adv[0, :2], torch.tensor([1.0, 1.0]))
