"""VinePPO's estimator on a fake engine whose continuations are known, so values are exact."""

import pytest
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
    """Continues a prefix with a fixed table (the j-th sample is entry j mod len), then ends with
    EOS; like a real engine, it stops a continuation after ``params.max_new_tokens`` tokens."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def generate(self, prompts, params, seed):
        self.calls.append((len(prompts), params.n))
        out = []
        for p in prompts:
            conts = self.table[CharTokenizer().decode(p)]
            out.append([([ord(ch) for ch in conts[j % len(conts)]] + [EOS])[: params.max_new_tokens] for j in range(params.n)])
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


def context(engine, max_new_tokens=32):
    return RolloutContext(engine, CharTokenizer(), LineTask(), SamplingParams(max_new_tokens=max_new_tokens), seed=0)


def test_vine_mc_values_advantages_and_dedup():
    # Steps of "a\nb\nz": "a", "\nb", "\nz" (the newline opens a step), so the states are
    # "Q\n", "Q\na", "Q\na\nb". The two responses share s_0 and s_1.
    responses = ["a\nb\nz", "a\nd\nx"]
    table = {
        "Q\n": ["a\nb\nz", "a\nd\nx"],  # V(s_0) = 1/2
        "Q\na": ["\nb\nz", "\nb\nz", "\nd\nx", "\nd\nx"],  # V(s_1) = 1/2
        "Q\na\nb": ["\nz"],  # V = 1
        "Q\na\nd": ["\nx"],  # V = 0
    }
    engine = ScriptedEngine(table)
    ctx = context(engine)
    adv, returns = VinePPO(num_mc_rollouts=4).advantages(make_rollouts("Q\n", responses, [1.0, 0.0]), ctx)
    assert returns is None
    # All MC requests go to the engine in one batch, each unique state once: 4 states, not 6.
    assert engine.calls == [(4, 4)]
    assert ctx.stats["vine/mc_requests"] == 4 and ctx.stats["vine/mc_dedup_saved"] == 2
    # Episode 0, tokens "a" | "\n" "b" | "\n" "z" EOS: A = [1/2 - 1/2, 1 - 1/2, 1 + 0 - 1]
    assert torch.allclose(adv[0, :6], torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0, 0.0]))
    # Episode 1: A = [0, 0 - 1/2, 0 + 0 - 0]
    assert torch.allclose(adv[1, :6], torch.tensor([0.0, -0.5, -0.5, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("cap, states", [(0, 1), (1, 2), (2, 3), (5, 3), (None, 3)])
def test_vine_cap_estimates_states_s0_to_sc(cap, states):
    # As the reference's max_step_for_value_estimation = c: states s_0..s_c, c + 1 of them (at most n).
    table = {"Q\n": ["a\nb\nz"], "Q\na": ["\nb\nz"], "Q\na\nb": ["\nz"]}
    engine = ScriptedEngine(table)
    VinePPO(num_mc_rollouts=1, max_step_for_value_estimation=cap).advantages(make_rollouts("Q\n", ["a\nb\nz"], [1.0]), context(engine))
    assert engine.calls == [(states, 1)]


def test_vine_states_past_the_cap_get_zero_advantage():
    table = {"Q\n": ["a\nb\nz", "q"], "Q\na": ["\nb\nz"]}
    engine = ScriptedEngine(table)
    adv, _ = VinePPO(num_mc_rollouts=2, max_step_for_value_estimation=1).advantages(make_rollouts("Q\n", ["a\nb\nz"], [1.0]), context(engine))
    # V(s_0) = 1/2, V(s_1) = 1 estimated; V(s_2) past the cap is filled with R = 1, so A_2 = 0.
    assert torch.allclose(adv[0, :6], torch.tensor([0.5, 0.0, 0.0, 0.0, 0.0, 0.0]))


def test_vine_continuations_get_max_new_tokens_from_every_state():
    # From s_2 = "Q\na\nb" (3 response tokens in), the continuation "\nw\nz" + EOS needs 5 new
    # tokens: within max_new_tokens = 6 (the reference's budget), though 3 + 5 > 6.
    table = {"Q\n": ["a\nb\nz"], "Q\na": ["\nb\nz"], "Q\na\nb": ["\nw\nz"]}
    adv, _ = VinePPO(num_mc_rollouts=1).advantages(make_rollouts("Q\n", ["a\nb\nz"], [1.0]), context(ScriptedEngine(table), 6))
    # every state has value 1 and R = 1: all advantages are 0
    assert torch.allclose(adv[0, :6], torch.zeros(6))


def test_vine_truncated_continuations_score_zero():
    # an MC continuation that would be correct but runs out of new tokens is unfinished: reward 0
    table = {"Q\n": ["a\nb\nz"]}
    adv, _ = VinePPO(num_mc_rollouts=1).advantages(make_rollouts("Q\n", ["z"], [1.0]), context(ScriptedEngine(table), 3))
    # V(s_0) = 0 because the continuation was cut at 3 tokens; A_0 = 1 - 0
    assert torch.allclose(adv[0, :2], torch.tensor([1.0, 1.0]))
