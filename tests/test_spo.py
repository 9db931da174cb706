"""SPO-chain (segment values at low-probability cut points, probability mask) on the scripted
engine of test_vine, so every value is exact; and one iteration from the quickstart."""

import math

import pytest
import torch

from lit_vine.advantages import spo_cutpoints
from lit_vine.algorithms import RolloutContext, SPOChain, SPOTree
from lit_vine.rollout.engine import SamplingParams
from lit_vine.tasks.base import Problem
from test_vine import EOS, CharTokenizer, LineTask, ScriptedEngine, context, make_rollouts


def test_cut_points_are_every_interval_th_low_probability_token():
    probs = [0.95, 0.5, 0.99, 0.3, 0.8, 0.97, 0.1, 0.6]  # below 0.9 at tokens 1, 3, 4, 6, 7
    assert spo_cutpoints(probs, 0.9, 1) == [1, 3, 4, 6, 7]
    assert spo_cutpoints(probs, 0.9, 2) == [1, 4, 7]
    assert spo_cutpoints(probs, 0.9, 5) == [1]
    assert spo_cutpoints(probs, 0.4, 1) == [3, 6]
    assert spo_cutpoints([0.99, 0.95], 0.9, 1) == []


def test_three_segment_advantages_and_probability_mask():
    # Response "pqrstu" + EOS (7 tokens) with cut points at tokens 2 and 4 (interval 1): boundaries
    # are the states "Q:pq" and "Q:pqrs", so the segments are "pq" | "rs" | "tu" EOS.
    rollouts = make_rollouts("Q:", ["pqrstu"], [1.0])
    p = [0.95, 0.99, 0.5, 0.92, 0.2, 0.97, 0.99]  # low at tokens 2 and 4 only
    rollouts.old_logprobs[0, :7] = torch.log(torch.tensor(p))
    table = {"Q:pq": ["rstu", "xxxx", "xxxx", "xxxx"], "Q:pqrs": ["tu", "tu", "tu", "xx"]}  # V = 1/4, 3/4
    engine = ScriptedEngine(table)

    class Ends(type(context(engine).task)):  # a response is right when it ends in "tu"
        def reward(self, response, problem):
            return float(response.endswith("tu"))

    ctx = context(engine)
    ctx = type(ctx)(ctx.engine, ctx.tokenizer, Ends(), ctx.sampling, ctx.seed)
    algorithm = SPOChain(num_mc_rollouts=4, cutpoint_interval=1)
    adv, returns = algorithm.advantages(rollouts, ctx)
    assert returns is None and engine.calls == [(2, 4)]
    # before the first boundary: 0; "rs": V(pqrs) - V(pq) = 1/2; "tu" EOS: R - V(pqrs) = 1/4;
    # then only the low-probability tokens (2 and 4) keep theirs
    unmasked = torch.tensor([0.0, 0.0, 0.5, 0.5, 0.25, 0.25, 0.25])
    mask = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert torch.allclose(adv[0, :7], unmasked * mask)
    assert torch.equal(algorithm.policy_mask(rollouts)[0, :7], mask)
    # interval 2: one boundary (token 2): "pq" 0, the rest R - V(pq) = 3/4, masked the same way
    adv2, _ = SPOChain(num_mc_rollouts=4, cutpoint_interval=2).advantages(rollouts, ctx)
    assert torch.allclose(adv2[0, :7], torch.tensor([0.0, 0.0, 0.75, 0.75, 0.75, 0.75, 0.75]) * mask)


def test_a_response_without_cut_points_gets_no_advantage_and_no_engine_call():
    rollouts = make_rollouts("Q:", ["pq"], [1.0])
    rollouts.old_logprobs[0, :3] = math.log(0.99)
    engine = ScriptedEngine({})
    adv, _ = SPOChain(num_mc_rollouts=2).advantages(rollouts, context(engine))
    assert torch.equal(adv, torch.zeros_like(adv)) and engine.calls == [(0, 2)]


@pytest.mark.parametrize("bad, message", [({"cutpoint_interval": 0}, "cutpoint_interval"), ({"prob_threshold": 1.5}, "prob_threshold")])
def test_bad_knobs_name_the_field(bad, message):
    with pytest.raises(Exception, match=message):
        SPOChain(**bad)


def test_policy_mask_restricts_the_policy_loss_and_its_kl_term():
    from conftest import REPO
    from lit_vine import RLModule
    from lit_vine.experience import Experience, pad_batch

    k3 = lambda d: math.exp(-d) - 1 + d  # noqa: E731
    for kl_in in ("loss", "reward"):
        module = RLModule(policy=str(REPO / "checkpoints" / "sft-arith"), kl_coef=0.5, kl_in=kl_in, kl_aggregation="seq_sum", kl_clip=10.0, entropy_coef=0.0)
        tok = module.tokenizer
        prompts = [tok("Compute 1 +2 from left to right.\n").input_ids] * 2
        responses = [tok("1+2=3\n#### 3", add_special_tokens=False).input_ids, tok("#### 3", add_special_tokens=False).input_ids]
        ids, attention, mask = pad_batch(prompts, responses, tok.pad_token_id)
        logprobs = module.sequence_logprobs(module.policy, ids, attention, mask.shape[1])
        delta = torch.zeros_like(logprobs)
        delta[0, 0], delta[0, 1], delta[1, 0] = 3.0, -3.0, 1.0
        advantages = torch.zeros_like(mask)
        advantages[0, 0], advantages[0, 1] = 5.0, 1.0
        policy_mask = mask.clone()
        policy_mask[0, 0] = 0.0  # token 0 of response 0 is out: its KL and its advantage 5 do not count
        batch = Experience(ids, attention, mask, logprobs, logprobs - delta, advantages, torch.zeros_like(mask), torch.zeros_like(mask), policy_mask)
        loss, stats = module._policy_loss(batch, {"token_mean": 1.0, "seq_mean": 1.0, "seq_sum": 1.0})
        kl = (min(k3(-3.0), 10.0) + k3(1.0)) / 2
        assert float(stats["kl_ref"]) == pytest.approx(kl, rel=1e-4)
        surrogate = -1.0 / float(policy_mask.sum())  # ratio 1: -mean of A over the kept tokens
        assert float(loss.detach()) == pytest.approx(surrogate + (0.5 * kl if kl_in == "loss" else 0.0), rel=1e-4)


# ----- SPO-tree ----------------------------------------------------------------------------------
class EndsInTu(LineTask):
    def reward(self, response, problem):
        return float(response.endswith("tu"))


def test_tree_bookkeeping_values_edges_and_dropped_zero_advantages():
    # branching (3, 2), segments of 2 tokens, 10 new tokens in all. The root "Q:" grows "ab" and
    # "de" (cut at 2 tokens: inner nodes) and "x" EOS (ended: a leaf worth 0). The last depth runs
    # to the end: "ab" -> "tu", "zz" (worth 1, 0), "de" -> "tu", "tu". So V(ab) = 1/2, V(de) = 1,
    # V(root) = (1/2 + 0 + 1) / 3 = 1/2.
    table = {"Q:": ["abqq", "x", "deqq"], "Q:ab": ["tu", "zz"], "Q:de": ["tu"]}
    engine = ScriptedEngine(table)
    ctx = RolloutContext(engine, CharTokenizer(), EndsInTu(), SamplingParams(max_new_tokens=10), seed=0)
    tree = SPOTree(branching=[3, 2], segment_tokens=2, max_edges_per_prompt=None)
    prompt = [ord(ch) for ch in "Q:"]
    problems = [Problem("p", "Q:", "z")]
    [root] = tree.grow([prompt], problems, ctx.sampling, ctx, seed=0)
    decode = CharTokenizer().decode
    assert engine.calls == [(1, 3), (2, 2)]  # depth 0: the root; depth 1: the two inner nodes together
    values = {decode(node.response): node.value for node in root.walk()}
    assert values == {"": 0.5, "ab": 0.5, "x": 0.0, "de": 1.0, "abtu": 1.0, "abzz": 0.0, "detu": 1.0}
    for node in root.walk():  # each node's value is the mean reward of its subtree's leaves (uniform branching)
        if node.children:
            assert node.value == sum(child.value for child in node.children) / len(node.children)

    episodes = tree.sample([prompt], problems, ctx.sampling, ctx, seed=0)
    got = {(decode(e.prompt_ids), decode(e.response_ids)): (e.reward, adv) for e, adv in zip(episodes, tree._advantages)}
    # root -> ab (1/2 - 1/2) and de -> tu twice (1 - 1) have advantage 0: dropped
    assert got == {("Q:", "x"): (0.0, -0.5), ("Q:", "de"): (1.0, 0.5), ("Q:ab", "tu"): (1.0, 0.5), ("Q:ab", "zz"): (0.0, -0.5)}
    assert all(e.response_ids[-1] == EOS for e in episodes if decode(e.response_ids) in ("x", "tu", "zz"))
    assert ctx.stats["rollout/reward"] == pytest.approx(3 / 5)  # leaves x, abtu, abzz, detu, detu: 0, 1, 0, 1, 1

    capped = SPOTree(branching=[3, 2], segment_tokens=2, max_edges_per_prompt=3).sample([prompt], problems, ctx.sampling, ctx, seed=0)
    assert len(capped) == 3 and {(decode(e.prompt_ids), decode(e.response_ids)) for e in capped} <= set(got)


def test_tree_advantages_are_the_edge_values_on_the_masked_tokens():
    tree = SPOTree(branching=[2], segment_tokens=4)
    tree._advantages = [0.5, -0.25]
    rollouts = make_rollouts("Q:", ["ab", "de"], [1.0, 0.0])
    rollouts.old_logprobs[:, :3] = torch.log(torch.tensor([[0.5, 0.95, 0.2], [0.3, 0.4, 0.99]]))
    adv, returns = tree.advantages(rollouts, context(ScriptedEngine({})))
    assert returns is None
    assert adv.tolist() == [[0.5, 0.0, 0.5], [-0.25, -0.25, 0.0]]  # p >= 0.9 masked out
    tree._advantages = [0.5]
    with pytest.raises(Exception, match="sample"):
        tree.advantages(rollouts, context(ScriptedEngine({})))


def test_spo_tree_preset_runs_one_quickstart_iteration(tmp_path):
    """The preset on the quickstart, segments scaled to its ~20-token answers: the tree's edges
    train the policy, and the logged reward is that of whole responses."""
    from conftest import REPO
    from lit_vine.cli import main
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    main(["fit", "--config", str(REPO / "configs" / "quickstart.yaml"), "--config", str(REPO / "configs" / "methods" / "spo_tree.yaml"),
          "--model.algorithm.segment_tokens=8", "--model.algorithm.branching=[3, 2, 2]", "--data.init_args.prompts_per_iteration=4",
          "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=100", f"--trainer.logger.init_args.save_dir={tmp_path}",
          "--trainer.callbacks=[{class_path: lit_vine.RolloutCallback}]", "--trainer.enable_progress_bar=false"])
    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents*")).parent))
    events.Reload()
    scalars = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    assert scalars["spo/tree_nodes"] > 4 * 3  # more than the first depth grew
    assert scalars["spo/edges_kept"] > 0 and scalars["train/policy_updates"] > 0
    assert 0 <= scalars["rollout/reward"] <= 1


def test_tree_step_blame_runs_over_root_to_leaf_paths(monkeypatch):
    """Blame is scored on whole responses: every root-to-leaf path, each token with its edge's
    advantage (before the mask), rewarded with its leaf's reward."""
    import lit_vine.algorithms.spo as spo

    seen = {}

    def capture(problems, response_ids, texts, scores, advantages, task, tokenizer):
        seen.update(texts=texts, scores=scores.tolist(), advantages=advantages.tolist())
        return {"blame/accuracy": 1.0}

    monkeypatch.setattr(spo, "blame_statistics", capture)
    monkeypatch.setattr(EndsInTu, "checks_steps", True)
    table = {"Q:": ["abqq", "x", "deqq"], "Q:ab": ["tu", "zz"], "Q:de": ["tu"]}
    ctx = RolloutContext(ScriptedEngine(table), CharTokenizer(), EndsInTu(), SamplingParams(max_new_tokens=10), seed=0)
    SPOTree(branching=[3, 2], segment_tokens=2).sample([[ord(ch) for ch in "Q:"]], [Problem("p", "Q:", "z")], ctx.sampling, ctx, seed=0)
    assert ctx.stats["blame/accuracy"] == 1.0
    rows = sorted(zip(seen["texts"], seen["scores"], seen["advantages"]))
    # V: root 1/2, ab 1/2, x 0, de 1; each path's tokens (EOS included) carry their edge's advantage
    assert rows == [("abtu", 1.0, [0.0, 0.0, 0.5, 0.5, 0.5]), ("abzz", 0.0, [0.0, 0.0, -0.5, -0.5, -0.5]),
                    ("detu", 1.0, [0.5, 0.5, 0.0, 0.0, 0.0]), ("detu", 1.0, [0.5, 0.5, 0.0, 0.0, 0.0]), ("x", 0.0, [-0.5, -0.5, 0.0, 0.0, 0.0])]
