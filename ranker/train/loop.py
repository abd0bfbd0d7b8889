"""The training loop both trainers share: log, validation curve, best model, checkpoints, resume, time budget.

A run lives in one folder: ``log.jsonl`` (one JSON record per event), ``checkpoint/`` (the last model),
``trainer.pt`` (optimizer, schedule and loop state, replaced atomically after each checkpoint), ``best/`` (the model
with the best validation score so far). Resuming needs both the checkpoint and ``trainer.pt``; SIGINT/SIGTERM
are held while the two are written (:func:`ranker.interrupt.deferred`), so a stop never leaves them out of step.
Steps are seeded by ``(seed, step)`` alone, so a resumed run draws what an uninterrupted one would have drawn.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ranker.interrupt import deferred
from ranker.io.atomic import atomic_open
from ranker.train.config import LoopConfig

log = logging.getLogger(__name__)
TRAINER_STATE = "trainer.pt"


def linear_schedule(optimizer: torch.optim.Optimizer, settings: LoopConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the optimizer's learning rates, then linear decay to 0 at ``max_steps``."""
    warm, total = max(settings.warmup_steps, 1), settings.max_steps

    def factor(step: int) -> float:
        return min((step + 1) / warm, max(0.0, (total - step) / max(total - settings.warmup_steps, 1)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TrainingRun:
    """One resumable training run in ``folder``; :meth:`fit` drives the steps the trainer supplies."""

    def __init__(self, folder: str | Path, settings: LoopConfig):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.log_path = self.folder / "log.jsonl"
        self.checkpoint = self.folder / "checkpoint"
        self.best = self.folder / "best"
        self.state: dict[str, Any] = {"step": 0, "elapsed": 0.0, "curve": [], "best": None}

    @property
    def resuming(self) -> bool:
        """Whether a checkpoint exists to resume from (load the model from :attr:`checkpoint` then)."""
        return (self.folder / TRAINER_STATE).is_file() and self.checkpoint.is_dir()

    def log(self, record: dict) -> None:
        """Append a record to ``log.jsonl`` and log it (level INFO) as ``key=value`` pairs."""
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        log.info(" ".join(f"{k}={v}" for k, v in record.items()))

    def fit(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: Callable[[int], dict],
            validate: Callable[[], dict[str, float]], save: Callable[[Path, torch.dtype, dict], None],
            metadata: Callable[[dict], dict], pairs_per_step: int) -> dict:
        """Train until ``max_steps`` or the time budget; returns the loop state (curve, best point).

        Args:
            model: Put in train mode for steps, eval mode for validation.
            optimizer: Restored from the checkpoint when resuming.
            step: Does one optimisation step (forward, backward, ``optimizer.step()``) for a step number and
                returns what to log (e.g. the loss).
            validate: Validation nDCG@10 per collection; their mean (higher is better) picks ``best/``.
            save: Writes a model folder: ``save(path, dtype, metadata)``.
            metadata: Training metadata to store with the model, given the loop state.
            pairs_per_step: Training pairs one step sees, for the curve.
        """
        s = self.settings
        schedule = linear_schedule(optimizer, s)
        if self.resuming:
            saved = torch.load(self.folder / TRAINER_STATE, weights_only=False)
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            self.state = saved["state"]
            self.log({"event": "resume", "step": self.state["step"]})
        state = self.state

        def evaluate_now() -> None:
            started = time.perf_counter()
            model.eval()
            per_collection = validate()
            score = sum(per_collection.values()) / len(per_collection)
            point = {"step": state["step"], "pairs": state["step"] * pairs_per_step, "val_ndcg10": round(score, 4),
                     "val": per_collection,
                     "train_seconds": round(state["elapsed"], 1),
                     "eval_seconds": round(time.perf_counter() - started, 1)}
            state["curve"].append(point)
            self.log({"event": "eval", **point})
            if state["best"] is None or score > state["best"]["val_ndcg10"]:
                state["best"] = point
                with deferred():
                    save(self.best, torch.float32, metadata(state))

        if not state["curve"]:
            evaluate_now()
        budget = s.max_minutes * 60 if s.max_minutes else math.inf
        while state["step"] < s.max_steps and state["elapsed"] < budget:
            started = time.perf_counter()
            torch.manual_seed(s.step_seed(state["step"]))
            model.train()
            record = step(state["step"])
            schedule.step()
            state["step"] += 1
            state["elapsed"] += time.perf_counter() - started
            self.log({"event": "step", "step": state["step"], **record,
                      "lr": f"{schedule.get_last_lr()[0]:.2e}", "train_seconds": round(state["elapsed"], 1)})
            last = state["step"] >= s.max_steps or state["elapsed"] >= budget
            if state["step"] % s.eval_every == 0 or last:
                evaluate_now()
            if state["step"] % s.checkpoint_every == 0 or last:
                with deferred():  # a model and its trainer state land together, or neither does
                    save(self.checkpoint, torch.float32, metadata(state))
                    with atomic_open(self.folder / TRAINER_STATE, "wb") as f:
                        torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                                    "state": state}, f)
        self.log({"event": "done", **(state["best"] or {})})
        return state
