"""What the benchmarks share: the quickstart's real MC workload, and running the quickstart with
some overrides and reading back its phase timings and test report."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lit_vine import ArithmeticTask, HFEngine, RolloutEngine, SamplingParams, TaskDataModule, VinePPO  # noqa: E402
from lit_vine.algorithms import RolloutContext  # noqa: E402
from lit_vine.experience import Rollouts, pad_batch  # noqa: E402

SFT = str(REPO / "checkpoints" / "sft-arith")
PHASES = ["generation", "scoring", "value_estimation", "training", "iteration"]


class Recorder(RolloutEngine):
    """Passes calls to ``engine`` and keeps the last call's prompts (the MC requests)."""

    def __init__(self, engine: RolloutEngine) -> None:
        self.engine, self.prompts = engine, None

    def generate(self, prompts, params, seed):
        self.prompts = prompts
        return self.engine.generate(prompts, params, seed)


def quickstart_states(policy, tokenizer) -> list[list[int]]:
    """The MC states of the quickstart's first iteration (32 prompts x 4 responses of ``policy``,
    split into steps, identical states once), as VinePPO asks for them."""
    data = TaskDataModule(ArithmeticTask(num_train=20000, seed=0), prompts_per_iteration=32)
    problems = data.iteration_problems(0)
    hf = HFEngine()
    hf.setup(policy, tokenizer)
    prompts = [data.task.prompt_ids(p, tokenizer) for p in problems]
    sampled = hf.generate(prompts, SamplingParams(0.6, 0.9, 64, n=4), seed=0)
    episodes = [(i, ids) for i, group in enumerate(sampled) for ids in group]
    texts = [data.task.score(ids, problems[i], tokenizer)[0] for i, ids in episodes]
    ids, attention, mask = pad_batch([prompts[i] for i, _ in episodes], [r for _, r in episodes], tokenizer.pad_token_id)
    zeros = torch.zeros(mask.shape)
    rollouts = Rollouts([problems[i] for i, _ in episodes], torch.tensor([i for i, _ in episodes]), [prompts[i] for i, _ in episodes],
                        [r for _, r in episodes], texts, torch.zeros(len(episodes)), ids, attention, mask, zeros, zeros, zeros)
    recorder = Recorder(hf)
    VinePPO(num_mc_rollouts=4, max_step_for_value_estimation=25).advantages(rollouts, RolloutContext(recorder, tokenizer, data.task, SamplingParams(), 0))
    return recorder.prompts


def run_quickstart(name: str, extra: list[str], log_root: Path, iterations: int = 40) -> dict:
    """``lit-vine fit --config configs/quickstart.yaml <extra>``: its wall time, the median seconds
    per iteration of each phase, the weight-sync probe (if any) and the test report."""
    cmd = [sys.executable, "-m", "lit_vine", "fit", "--config", "configs/quickstart.yaml", *extra,
           f"--trainer.max_epochs={iterations}", "--trainer.enable_progress_bar=false",
           f"--trainer.logger.init_args.save_dir={log_root}", f"--trainer.logger.init_args.name={name}", "--trainer.logger.init_args.version=0"]
    print("[benchmark]", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    log_dir = log_root / name / "version_0"
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    phases = {p: statistics.median(e.value for e in events.Scalars(f"time/{p}")) for p in PHASES if f"time/{p}" in tags}
    probe = [e.value for e in events.Scalars("engine/weight_sync_probe_max_abs_diff")] if "engine/weight_sync_probe_max_abs_diff" in tags else []
    return {"command": " ".join(cmd[1:]), "wall_s": wall, "median_s_per_iteration": phases, "test": json.loads((log_dir / "test_report.json").read_text()),
            "probe_max": max(probe) if probe else None, "probe_logged": len(probe)}
