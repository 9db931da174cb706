"""FSDP2 (``fully_shard`` through Lightning's ModelParallelStrategy, configs/strategies/fsdp.yaml)
on two CPU processes with gloo: an RL run, a checkpoint, and a resume that continues it exactly.

Each test runs ``lit-vine fit`` three times: two iterations straight; one iteration that writes a
sharded checkpoint (one shard per process) with its HF export; and a resume of that checkpoint to
the second iteration. The resumed run must end with the straight run's weights and metrics, the
export must hold the whole (gathered) policy, and the frozen reference must be the same model.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from two_processes import launch, load_records, run_config

FSDP = {"class_path": "lightning.pytorch.strategies.ModelParallelStrategy"}
ALGORITHMS = {
    "VinePPO": {"class_path": "lit_vine.VinePPO", "init_args": {"num_mc_rollouts": 2}},
    "PPO": {"class_path": "lit_vine.PPO"},
}


def recorder(out) -> dict:
    return {"class_path": "two_processes.Recorder", "init_args": {"out_dir": str(out)}}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(ALGORITHMS))
def test_fsdp2_trains_checkpoints_and_resumes_exactly(tmp_path, method):
    algorithm = ALGORITHMS[method]
    checkpoint = {"class_path": "lit_vine.checkpointing.RunCheckpoint",
                  "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True, "every_n_epochs": 1, "export_hf": True}}
    launch(run_config(tmp_path, "straight", algorithm=algorithm, strategy=FSDP, iterations=2, callbacks=[recorder(tmp_path / "straight")]))
    launch(run_config(tmp_path, "first", algorithm=algorithm, strategy=FSDP, iterations=1, callbacks=[checkpoint, recorder(tmp_path / "first")]))
    assert (tmp_path / "ckpt" / "last.ckpt").is_dir(), "a sharded checkpoint is a folder of shards"
    launch(run_config(tmp_path, "resumed", algorithm=algorithm, strategy=FSDP, iterations=2, callbacks=[recorder(tmp_path / "resumed")]),
           "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt"))

    straight, first, resumed = (load_records(tmp_path / name) for name in ("straight", "first", "resumed"))
    for ranks in (straight, first, resumed):  # gathered on every rank: the same whole model
        for name, tensor in ranks[0]["weights"].items():
            assert torch.equal(tensor, ranks[1]["weights"][name]), name
        assert ranks[0]["rope_dtypes"] == ["torch.float32"]
    moved = max(float((straight[0]["weights"][k] - first[0]["weights"][k]).abs().max()) for k in first[0]["weights"])
    assert moved > 0, "the second iteration changed nothing: the resume check would be vacuous"
    for name, tensor in straight[0]["weights"].items():
        torch.testing.assert_close(resumed[0]["weights"][name], tensor, rtol=0, atol=0, msg=f"resume differs on {name}")
    assert resumed[0]["metrics"] == straight[0]["metrics"]
    assert resumed[0]["reference_fingerprint"] == straight[0]["reference_fingerprint"]
    if method == "PPO":
        assert any(k.startswith("train/value_loss") for k in resumed[0]["iterations"][-1]["keys"])

    export = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt" / "last-hf")
    for name, tensor in export.state_dict().items():
        assert torch.equal(tensor, first[0]["weights"][name]), f"the HF export's {name} is not the gathered policy"
