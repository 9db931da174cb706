"""Device and dtype discipline, checked on CPU the way a CUDA run would check it.

On a GPU, a tensor made without ``device=`` lands on the CPU and the first operation that mixes it
with the rollouts' CUDA tensors raises (the first GPU run of lit-vine stopped so, in
``VinePPO.advantages``). Here the rollouts live on the CPU and the default device is ``meta``:
any tensor an algorithm makes without naming a device lands on ``meta`` and mixing it with the
rollouts raises in the same way. Likewise, under ``bf16-true`` the default dtype is bfloat16 while
the rollout callback works: advantages built without ``dtype=`` would be rounded to 8 bits.
"""

from __future__ import annotations

import random

import pytest
import torch

from conftest import REPO
from lit_vine import DPOPlus, GRPO, PPO, RLOO, VCPPO, ArithmeticTask, Reinforce, RestEM, SPOChain, SPOTree, VinePPO
from lit_vine.algorithms import RolloutContext
from lit_vine.experience import Rollouts, pad_batch
from lit_vine.models import load_policy_and_tokenizer
from lit_vine.rollout.engine import RolloutEngine, SamplingParams

SFT = str(REPO / "checkpoints" / "sft-arith")


class ScriptedEngine(RolloutEngine):
    """Completions without a model: the right answer to the request's problem or a wrong one, at
    random (seeded), so values, advantages and trees are not all zero. Only Python lists: the
    engine itself makes no tensors."""

    def __init__(self, tokenizer, answers: dict[tuple[int, ...], str]) -> None:
        self.tokenizer, self.answers = tokenizer, answers  # prompt ids -> the problem's answer

    def generate(self, prompts, params, seed):
        rng = random.Random(seed)
        out = []
        for request in prompts:
            answer = next(a for p, a in self.answers.items() if tuple(request[: len(p)]) == p)
            texts = [f"1+1=2\n#### {answer}", f"#### {answer}1"]
            finished = [self.tokenizer(rng.choice(texts), add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id] for _ in range(params.n)]
            out.append([ids[: params.max_new_tokens] for ids in finished])  # cut short: no EOS, as an engine's contract says
        return out


@pytest.fixture(scope="module")
def setting():
    """Eight real responses of the shipped SFT policy to four problems, graded, on the CPU."""
    _, tokenizer = load_policy_and_tokenizer(SFT)
    task = ArithmeticTask(num_train=8, num_validation=0, num_test=0, seed=3)
    problems = task.problems("train")[:4]
    prompts = [task.prompt_ids(p, tokenizer) for p in problems]
    engine = ScriptedEngine(tokenizer, {tuple(ids): p.answer for ids, p in zip(prompts, problems)})
    responses = [ids for group in engine.generate(prompts, SamplingParams(n=2, max_new_tokens=32), seed=1) for ids in group]
    episode_problems = [p for p in problems for _ in range(2)]
    graded = task.score_many(list(zip(responses, episode_problems)), tokenizer)
    assert 0 < sum(r for _, r in graded) < len(graded), "the check needs right and wrong answers"
    return tokenizer, task, problems, prompts, responses, graded, engine


def cpu_rollouts(setting) -> Rollouts:
    tokenizer, task, problems, prompts, responses, graded, _ = setting
    episode_prompts = [p for p in prompts for _ in range(2)]
    input_ids, attention_mask, response_mask = pad_batch(episode_prompts, responses, tokenizer.pad_token_id)
    B, T = response_mask.shape
    generator = torch.Generator().manual_seed(0)
    old_logprobs = -torch.rand(B, T, generator=generator) * response_mask  # some tokens below SPO's p = 0.9
    scores = torch.tensor([r for _, r in graded], device="cpu")
    token_rewards = torch.zeros(B, T, device="cpu")
    token_rewards[torch.arange(B, device="cpu"), response_mask.sum(-1).long() - 1] = scores
    return Rollouts(
        problems=[p for p in problems for _ in range(2)],
        group=torch.arange(len(problems), device="cpu").repeat_interleave(2),
        prompt_ids=episode_prompts,
        response_ids=responses,
        texts=[text for text, _ in graded],
        scores=scores,
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        old_logprobs=old_logprobs,
        ref_logprobs=old_logprobs - 0.01,
        token_rewards=token_rewards,
        values=torch.rand(B, T, generator=generator) * response_mask,
    )


ALGORITHMS = [
    VinePPO(num_mc_rollouts=3), SPOChain(num_mc_rollouts=3, cutpoint_interval=2), SPOTree(branching=[3, 3], segment_tokens=4),
    PPO(), VCPPO(length_adaptive_alpha=0.05), GRPO(), RLOO(), Reinforce(), RestEM(), DPOPlus(),
]


def run_algorithm(algorithm, setting, rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the rollout callback asks of an algorithm in one iteration: its episodes (SPO-tree grows
    trees), advantages, the policy mask and the rows it trains on."""
    tokenizer, task, problems, prompts, _, _, engine = setting
    ctx = RolloutContext(engine, tokenizer, task, SamplingParams(max_new_tokens=16), seed=0)
    if isinstance(algorithm, SPOTree):  # its advantages belong to the episodes its own sample() made
        episodes = algorithm.sample(prompts, problems, SamplingParams(n=2, max_new_tokens=16), ctx, seed=0)
        rollouts = tree_rollouts(setting, episodes, rollouts)
    advantages, returns = algorithm.advantages(rollouts, ctx)
    algorithm.policy_mask(rollouts)
    algorithm.training_rows(rollouts, advantages)
    return advantages, returns


def tree_rollouts(setting, episodes, like: Rollouts) -> Rollouts:
    tokenizer = setting[0]
    with torch.device("cpu"):
        input_ids, attention_mask, response_mask = pad_batch([e.prompt_ids for e in episodes], [e.response_ids for e in episodes], tokenizer.pad_token_id)
        B, T = response_mask.shape
        scores = torch.tensor([e.reward for e in episodes], dtype=torch.float32)
        logprobs = torch.full((B, T), -0.5, dtype=torch.float32) * response_mask
        return Rollouts([like.problems[0]] * B, torch.tensor([e.problem for e in episodes]), [e.prompt_ids for e in episodes],
                        [e.response_ids for e in episodes], [""] * B, scores, input_ids, attention_mask, response_mask,
                        logprobs, logprobs, torch.zeros(B, T, dtype=torch.float32))


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: type(a).__name__)
def test_no_tensor_is_made_off_the_rollouts_device(algorithm, setting):
    rollouts = cpu_rollouts(setting)
    with torch.device("meta"):  # a tensor made without device= now clashes with the CPU rollouts, as on CUDA
        advantages, returns = run_algorithm(algorithm, setting, rollouts)
    assert advantages.device.type == "cpu"
    assert returns is None or returns.device.type == "cpu"


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: type(a).__name__)
def test_advantages_stay_float32_when_the_default_dtype_is_bfloat16(algorithm, setting):
    rollouts = cpu_rollouts(setting)
    expected, _ = run_algorithm(algorithm, setting, rollouts)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # what bf16-true's forward context does while experience is made
    try:
        advantages, returns = run_algorithm(algorithm, setting, rollouts)
    finally:
        torch.set_default_dtype(previous)
    assert advantages.dtype == torch.float32 and (returns is None or returns.dtype == torch.float32)
    torch.testing.assert_close(advantages, expected, rtol=0, atol=0)
