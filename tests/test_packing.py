"""Packed (padding-free) forwards: the layout, and the same numbers as the padded forward."""

import pytest
import torch

from conftest import REPO
from lit_vine import PPO, RLModule
from lit_vine.experience import Experience, pad_batch
from lit_vine.packing import pack, packing_works

SFT = str(REPO / "checkpoints" / "sft-arith")


def test_pack_layout_by_hand():
    # episodes of 4, 2, 3 and 1 tokens in a (4, 5) batch: prompt width 2, response width 3
    input_ids = torch.tensor([[11, 12, 13, 14, 0], [0, 21, 22, 0, 0], [31, 32, 33, 0, 0], [0, 41, 0, 0, 0]])
    mask = (input_ids != 0).long()
    packed = pack(input_ids, mask)
    # rows of length 4, first-fit decreasing: [11..14], [31 32 33 41], [21 22 pad pad]
    assert packed.input_ids.tolist() == [[11, 12, 13, 14], [31, 32, 33, 41], [21, 22, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 0, 1]]
    assert packed.index[1].tolist() == [-1, 8, 9, -1, -1]
    assert packed.index[3].tolist() == [-1, 7, -1, -1, -1]
    back = packed.unpack(packed.input_ids)
    assert torch.equal(back[mask.bool()], input_ids[mask.bool()])
    assert packed.unpack(packed.input_ids, slice(1, 3)).tolist() == [[12, 13], [21, 22], [32, 33], [41, 11]]  # (3, 2) is padding: not zeroed


def random_batch(generator, rows=12, vocab=200):
    prompts = [torch.randint(3, vocab, (int(torch.randint(3, 9, (1,), generator=generator)),), generator=generator).tolist() for _ in range(rows)]
    responses = [torch.randint(3, vocab, (int(torch.randint(1, 15, (1,), generator=generator)),), generator=generator).tolist() for _ in range(rows)]
    return pad_batch(prompts, responses, pad_id=0)


def test_packed_logits_equal_padded_logits(tiny):
    model, _ = tiny
    model.eval()
    input_ids, mask, _ = random_batch(torch.Generator().manual_seed(0))
    packed = pack(input_ids, mask)
    assert len(packed.input_ids) < len(input_ids)  # something was packed together
    with torch.no_grad():
        padded = model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        out = packed.unpack(model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits)
    real = mask.bool()
    torch.testing.assert_close(out[real], padded[real], atol=2e-5, rtol=1e-4)


def test_packing_check_catches_a_model_that_mixes_episodes(tiny, monkeypatch):
    import transformers.masking_utils as masking

    model, _ = tiny
    assert packing_works(model)
    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)  # boundaries ignored
    with pytest.warns(UserWarning, match="packing"):
        assert not packing_works(model)


def experience(module, generator, rows=16):
    input_ids, mask, response_mask = random_batch(generator, rows, vocab=module.policy.config.vocab_size)
    T = response_mask.shape[1]
    old = module.sequence_logprobs(module.policy, input_ids, mask, T).detach() + 0.05 * torch.randn(rows, T, generator=generator)
    return Experience(
        input_ids=input_ids, attention_mask=mask, response_mask=response_mask, old_logprobs=old,
        ref_logprobs=old - 0.1, advantages=torch.randn(rows, T, generator=generator) * response_mask,
        returns=torch.rand(rows, T, generator=generator), old_values=torch.rand(rows, T, generator=generator),
    )


def test_rl_module_numbers_with_and_without_packing():
    """Log-probs, critic values, the loss and its gradients: packing changes none of them."""
    torch.manual_seed(0)
    modules = {packing: RLModule(policy=SFT, algorithm=PPO(), micro_batch_size=5, packing=packing) for packing in (True, False)}
    assert modules[True].packing and not modules[False].packing
    modules[False].load_state_dict(modules[True].state_dict())
    batch = experience(modules[True], torch.Generator().manual_seed(1))
    T = batch.response_mask.shape[1]
    results = {}
    for packing, module in modules.items():
        logprobs = module.sequence_logprobs(module.policy, batch.input_ids, batch.attention_mask, T)
        values = module.critic_values(batch.input_ids, batch.attention_mask, T)
        module.policy.zero_grad()
        total = sum(module._policy_loss(micro, share)[0] for micro, share in module._micro_batches(batch))
        total.backward()
        grads = [p.grad.clone() for p in module.policy.parameters()]
        results[packing] = (logprobs, values, total.detach(), grads)
    mask = batch.response_mask.bool()
    (lp1, v1, loss1, g1), (lp0, v0, loss0, g0) = results[True], results[False]
    torch.testing.assert_close(lp1[mask], lp0[mask], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(v1[mask], v0[mask], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(loss1, loss0, atol=1e-6, rtol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_score_tokens_takes_the_samplers_log_probs_only_for_the_ppo_family():
    from lit_vine import RestEM

    input_ids, mask, response_mask = random_batch(torch.Generator().manual_seed(2), rows=3, vocab=250)
    given = [[-0.5] * int(n) for n in response_mask.sum(-1).tolist()]
    for algorithm, used in ((PPO(), True), (RestEM(), False)):
        module = RLModule(policy=SFT, algorithm=algorithm)
        old, _, _ = module.score_tokens(input_ids, mask, response_mask, given)
        forward = module.sequence_logprobs(module.policy, input_ids, mask, response_mask.shape[1])
        expected = torch.full_like(old, -0.5) if used else forward
        assert torch.equal(old[response_mask.bool()], expected[response_mask.bool()])
        recomputed, _, _ = module.score_tokens(input_ids, mask, response_mask, [None, *given[1:]])  # one missing: recompute
        assert torch.equal(recomputed, forward)


def test_cached_pass_order_is_the_order_of_a_fresh_shuffle():
    """TaskDataModule keeps each pass's shuffle instead of redoing it per iteration: same prompts."""
    import random

    from lit_vine import ArithmeticTask, TaskDataModule

    data = TaskDataModule(ArithmeticTask(num_train=50, seed=0), prompts_per_iteration=8, seed=3)
    train = data.task.problems("train")

    def fresh(iteration):  # the order as computed before the cache: one shuffle per pass
        chosen = []
        for position in range(iteration * 8, (iteration + 1) * 8):
            epoch, index = divmod(position, 50)
            order = list(range(50))
            random.Random(3 * 1_000_003 + epoch).shuffle(order)
            chosen.append(order[index])
        return [train[i].id for i in chosen]

    for iteration in [0, 5, 6, 7, 12, 1]:  # 6 straddles passes 0 and 1; back to 1 after pass 1
        assert [p.id for p in data.iteration_problems(iteration)] == fresh(iteration)
