"""SPO-tree's edges against the SPO authors' code, on the same random trees.

    python benchmarks/spo_tree_check.py --spo-src ~/SPO/src      # a checkout of AIFrameResearch/SPO

lit-vine's ``SPOTree.grow`` builds a tree on a random engine (random branching, segment length and
token budget, segments ending or not in EOS, reward 1 when a response ends in "tu"); the tree is
converted to the authors' node format (``text``, ``full_text``, ``leaf``, ``children``), every inner
node getting the authors' value rule (``_construct_tree`` in
``inference_strategies/hybrid_inference_strategy.py``: the mean of its children's rewards), and
their ``extract_edges_from_tree`` (``episode_generators/tree_episode_generator.py``, read from the
checkout, run as is) lists the edges. ``SPOTree.sample`` on the same tree must give the same
(parent text, segment, advantage, value) for every edge (values within 1e-12), and no other edge. Writes
``benchmarks/spo_tree_check/results.json``.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import random
import sys
import textwrap
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from lit_vine.algorithms import RolloutContext, SPOTree  # noqa: E402
from lit_vine.rollout.engine import RolloutEngine, SamplingParams  # noqa: E402
from lit_vine.tasks.base import Problem  # noqa: E402
from test_spo import EndsInTu  # noqa: E402
from test_vine import EOS, CharTokenizer  # noqa: E402

PROMPT = "Q:"


def authors_extract_edges(src: Path):
    """The authors' ``extract_edges_from_tree`` from their file, without importing their package."""
    path = src / "treetune" / "episode_generators" / "tree_episode_generator.py"
    text = path.read_text()
    node = next(n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef) and n.name == "extract_edges_from_tree")
    namespace = {"copy": copy, "json": json}
    exec(textwrap.dedent(ast.get_source_segment(text, node)), namespace)
    return namespace["extract_edges_from_tree"]


class RandomEngine(RolloutEngine):
    """Segments of random length over the letters t and u, each ending in EOS unless cut."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def generate(self, prompts, params, seed):
        def one():
            ids = [ord(self.rng.choice("tu")) for _ in range(self.rng.randint(1, params.max_new_tokens + 2))] + [EOS]
            return ids[: params.max_new_tokens]
        return [[one() for _ in range(params.n)] for _ in prompts]


def authors_format(node, tokenizer) -> dict:
    """A lit-vine tree node in the authors' format, inner nodes valued by their rule."""
    out = {"text": tokenizer.decode(node.segment), "full_text": PROMPT + tokenizer.decode(node.response), "leaf": not node.children}
    if not node.children:
        return {**out, "reward": node.value}
    children = [authors_format(child, tokenizer) for child in node.children]
    rewards = [child["reward"] for child in children]
    return {**out, "children": children, "reward": float(np.mean(rewards)), "reward_std": float(np.std(rewards))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spo-src", type=Path, required=True, help="the src/ folder of an AIFrameResearch/SPO checkout")
    parser.add_argument("--trees", type=int, default=1000)
    args = parser.parse_args()
    extract = authors_extract_edges(args.spo_src)
    tokenizer, edges, trees_with_edges = CharTokenizer(), 0, 0
    for trial in range(args.trees):
        rng = random.Random(trial)
        ctx = RolloutContext(RandomEngine(rng), tokenizer, EndsInTu(), SamplingParams(max_new_tokens=rng.randint(4, 12)), seed=0)
        tree = SPOTree(branching=[rng.randint(1, 4) for _ in range(rng.randint(1, 3))], segment_tokens=rng.randint(1, 4), max_edges_per_prompt=None)
        prompt, problems = [ord(ch) for ch in PROMPT], [Problem("p", PROMPT, "z")]
        [root] = tree.grow([prompt], problems, ctx.sampling, ctx, seed=0)
        tree.grow = lambda *_, root=root: [root]  # sample() on this very tree
        episodes = tree.sample([prompt], problems, ctx.sampling, ctx, seed=0)
        ours = sorted((tokenizer.decode(e.prompt_ids), tokenizer.decode(e.response_ids), a, e.reward) for e, a in zip(episodes, tree._advantages))
        theirs = authors_format(root, tokenizer) | {"_request_object": {"_treetune__idx": 0}}
        reference = sorted((e["query_text"], e["response_text"], e["advantage"], e["value"]) for e in extract(None, theirs))
        same = len(ours) == len(reference) and all(o[:2] == r[:2] and abs(o[2] - r[2]) < 1e-12 and abs(o[3] - r[3]) < 1e-12 for o, r in zip(ours, reference))
        if not same:
            sys.exit(f"tree {trial}: lit-vine {ours} != the authors' {reference}")
        edges, trees_with_edges = edges + len(ours), trees_with_edges + bool(ours)
    result = {"trees": args.trees, "trees_with_edges": trees_with_edges, "edges": edges, "all_edges_equal": True}
    (HERE / "spo_tree_check").mkdir(exist_ok=True)
    (HERE / "spo_tree_check" / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.trees} random trees, {edges} edges: lit-vine's SPOTree edges are the authors' extract_edges_from_tree's")


if __name__ == "__main__":
    main()
