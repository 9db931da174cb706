"""Runs that survive: skipped updates on numerical faults, guarded reward calls, degenerate rollouts,
and Ctrl+C / SIGTERM turned into a checkpoint (see docs/robustness.md)."""

from __future__ import annotations

import logging
import math
import os
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

logger = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient."""


class RewardError(RuntimeError):
    """A reward function raised or ran past its time limit (``on_reward_error: stop``)."""


def _every(count: int) -> bool:
    """Log the 1st..5th occurrence, then the 10th, 100th, 1000th ...: visible, never a flood."""
    return count <= 5 or (count >= 10 and str(count).rstrip("0") == "1")


# ----- numerical faults --------------------------------------------------------------------------
class UpdateGuard:
    """Decides whether an optimizer update goes ahead.

    An update is skipped (gradients zeroed, no optimizer step) when its loss or gradient norm is
    not finite, or when the mean importance ratio of the mini-batch is beyond ``max_mean_ratio``.
    After ``max_consecutive_nonfinite`` non-finite updates of one model in a row the run stops with
    :class:`NonFiniteError`. The counters are part of the checkpoint.
    """

    def __init__(self, max_consecutive_nonfinite: int = 3, max_mean_ratio: float | None = 5.0) -> None:
        self.max_consecutive_nonfinite, self.max_mean_ratio = max_consecutive_nonfinite, max_mean_ratio
        self.skipped = 0  # updates skipped so far, all models, all reasons
        self.consecutive: dict[str, int] = {}

    def reason_to_skip(self, model: str, loss: float | None, grad_norm: float, ratio: float | None) -> str | None:
        """Why this update must be skipped, or ``None``. ``model`` is ``policy`` or ``critic``."""
        if loss is not None and not math.isfinite(loss):
            return f"{model} loss is {loss}"
        if not math.isfinite(grad_norm):
            return f"{model} gradient norm is {grad_norm}"
        if ratio is not None and self.max_mean_ratio is not None and not ratio <= self.max_mean_ratio:
            return f"mean importance ratio {ratio:.3g} > max_mean_ratio={self.max_mean_ratio}"
        return None

    def record(self, model: str, reason: str | None, iteration: int, mini_batch: int) -> None:
        """Count one update's outcome; raise once the non-finite limit is reached."""
        if reason is None:
            self.consecutive[model] = 0
            return
        self.skipped += 1
        nonfinite = "ratio" not in reason
        if nonfinite:
            self.consecutive[model] = self.consecutive.get(model, 0) + 1
        where = f"iteration {iteration}, mini-batch {mini_batch}"
        if nonfinite and self.consecutive[model] >= self.max_consecutive_nonfinite:
            raise NonFiniteError(
                f"stopping: {self.consecutive[model]} {model} updates in a row were non-finite "
                f"(max_consecutive_nonfinite={self.max_consecutive_nonfinite}); last at {where}: {reason}. "
                "Lower the learning rate, check the data and rewards, or resume from an earlier checkpoint."
            )
        if _every(self.skipped):
            rank_zero_warn(f"skipped a {model} update at {where}: {reason} ({self.skipped} skipped so far)")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "consecutive": dict(self.consecutive)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped, self.consecutive = state["skipped"], dict(state["consecutive"])


# ----- rewards -----------------------------------------------------------------------------------
class RewardRunner:
    """Calls a reward function in a daemon worker thread so that a call that hangs is abandoned
    after ``time_limit`` seconds (Python cannot kill a thread: a hung call keeps its thread, which
    never blocks exit). Picklable: copies start their own worker."""

    def __init__(self, time_limit: float) -> None:
        if time_limit <= 0:
            raise ValueError(f"reward_time_limit must be > 0 or null, got {time_limit}")
        self.time_limit = time_limit
        self._requests: queue.Queue | None = None
        self._lock = threading.Lock()

    def _worker(self, requests: queue.Queue) -> None:
        while True:
            fn, args, reply = requests.get()
            try:
                reply.put((True, fn(*args)))
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                reply.put((False, err))

    def __call__(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)``; raises ``TimeoutError`` after ``time_limit`` s, re-raises what ``fn`` raised."""
        with self._lock:
            if self._requests is None:
                self._requests = queue.Queue()
                threading.Thread(target=self._worker, args=(self._requests,), daemon=True, name="lit-vine-reward").start()
            reply: queue.Queue = queue.Queue(maxsize=1)
            self._requests.put((fn, args, reply))
            try:
                ok, value = reply.get(timeout=self.time_limit)
            except queue.Empty:
                self._requests = None  # the worker is stuck in the call: the next call gets a new one
                raise TimeoutError(f"no reward within reward_time_limit={self.time_limit}s") from None
        if not ok:
            raise value
        return value

    def __getstate__(self) -> dict:
        return {"time_limit": self.time_limit}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["time_limit"])


def guarded_reward(task: Any, text: str, problem: Any) -> float:
    """``task.reward(text, problem)`` under the task's ``reward_time_limit`` and ``on_reward_error``
    policy (``stop``: raise :class:`RewardError` naming the problem; ``zero``: warn, count, score 0).
    A NaN or infinite reward is an error like an exception."""
    limit = getattr(task, "reward_time_limit", None)
    try:
        if limit is None:
            reward = task.reward(text, problem)
        else:
            runner = task.__dict__.get("_reward_runner")
            if runner is None or runner.time_limit != limit:
                runner = task.__dict__["_reward_runner"] = RewardRunner(limit)
            reward = runner(task.reward, text, problem)
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"reward is {reward}")
        return reward
    except Exception as err:  # noqa: BLE001 - reported with the problem id
        what = "timed out" if isinstance(err, TimeoutError) else f"raised {type(err).__name__}: {err}"
        message = f"reward for problem {problem.id!r} {what} (response: {text[:80]!r})"
        if getattr(task, "on_reward_error", "stop") != "zero":
            raise RewardError(message + "; set on_reward_error: zero on the task to score such responses 0 and go on") from err
        task.reward_errors = getattr(task, "reward_errors", 0) + 1
        if _every(task.reward_errors):
            logger.warning("%s; scored 0 (%d reward errors so far)", message, task.reward_errors)
        return 0.0


# ----- degenerate rollouts -----------------------------------------------------------------------
def check_responses(responses: Sequence[Sequence[int]], eos: int, max_new_tokens: int, iteration: int) -> dict[str, float]:
    """Warn when a whole iteration's responses are empty (EOS at once) or never stop; both are
    legal (they score 0 and train as such) but usually mean a broken policy or a too-small
    ``max_new_tokens``. Returns the fractions for logging."""
    n = max(1, len(responses))
    empty = sum(1 for r in responses if len(r) == 0 or list(r) == [eos]) / n
    truncated = sum(1 for r in responses if len(r) > 0 and r[-1] != eos) / n
    if empty == 1.0:
        rank_zero_warn(f"iteration {iteration}: every response is empty (the policy emitted EOS at once); they all score 0")
    if truncated == 1.0:
        rank_zero_warn(
            f"iteration {iteration}: no response stopped within max_new_tokens={max_new_tokens}; unfinished responses score 0 "
            "(raise model.max_new_tokens if answers need more room)"
        )
    return {"rollout/empty": empty, "rollout/truncated": truncated}


# ----- prompts longer than the context -----------------------------------------------------------
def fit_prompt(ids: list[int], problem_id: str, limit: int | None, bos: int | None, seen: set[str]) -> list[int]:
    """Cut a prompt that leaves no room for ``max_new_tokens`` within the policy's context from
    the left (BOS kept), warning once per problem; ``limit`` is context - max_new_tokens."""
    if limit is None or len(ids) <= limit:
        return ids
    if problem_id not in seen:
        seen.add(problem_id)
        if _every(len(seen)):
            rank_zero_warn(
                f"problem {problem_id!r}: prompt of {len(ids)} tokens + max_new_tokens does not fit the policy's context; "
                f"cut from the left to {limit} tokens ({len(seen)} such prompts so far; set the task's max_prompt_tokens "
                "and long_prompts to skip them instead)"
            )
    keep_bos = bos is not None and ids and ids[0] == bos
    return ids[:1] + ids[len(ids) - limit + 1 :] if keep_bos else ids[len(ids) - limit :]


# ----- interruption ------------------------------------------------------------------------------
class CheckpointOnInterrupt(Callback):
    """SIGTERM (preemption) or Ctrl+C: finish the current mini-batch, write a checkpoint, exit.

    Lightning already turns SIGTERM into a stop after the running mini-batch; this callback makes
    Ctrl+C do the same (a second Ctrl+C aborts at once, without a checkpoint) and writes the
    checkpoint as ``last.ckpt`` into the first ``ModelCheckpoint``'s folder, so
    ``lit-vine fit --config run.yaml --ckpt_path last`` continues from it (mid-iteration too: the
    iteration's experience and mini-batch position are in the checkpoint).

    Args:
        dirpath: where to write when there is no ``ModelCheckpoint``.
        filename: checkpoint file name.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last.ckpt") -> None:
        self.dirpath, self.filename = dirpath, filename
        self.path: str | None = None
        self._previous_sigint: Any = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        self._previous_sigint = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame) -> None:
            if trainer.received_sigterm:  # second Ctrl+C
                raise KeyboardInterrupt
            rank_zero_info("\nInterrupted: finishing the current mini-batch, then writing a checkpoint (Ctrl+C again aborts)")
            trainer._signal_connector.received_sigterm = True

        signal.signal(signal.SIGINT, on_sigint)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def _target(self, trainer: Trainer) -> str:
        folder = next((cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)), None)
        folder = folder or self.dirpath or os.path.join(trainer.default_root_dir, "checkpoints")
        return os.path.join(folder, self.filename)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        self.path = self._target(trainer)
        trainer.save_checkpoint(self.path)
        rank_zero_info(
            f"lit-vine: interrupted at iteration {trainer.current_epoch}, optimizer step {trainer.global_step}; "
            f"checkpoint written to {self.path}\n  resume with: lit-vine fit --config <run.yaml> --ckpt_path {self.path}"
        )
