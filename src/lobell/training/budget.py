"""`time_budget`: durations, the clock, fitting epochs to the time left, and when to stop.

Nothing here imports torch: config.py parses budgets with it, and `lobell --help` stays instant.
The runner measures (training/trial.py), this module decides. The rules, in one place:

- The budget is the whole `lobell train` wall time, from the command's start (or `train()`'s
  call from Python) to the model folder written, final evaluation and files included.
- Epochs are a ceiling: the run never plans more epochs than the config (yours or the recipe's)
  asks; it plans fewer when they do not fit, and, when not even one fits, a number of steps.
- At every optimizer step the run stops when the next step, one evaluation (of the weights
  reached) and the final evaluation and writes would pass the deadline.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smh])", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
DURATION_HELP = "expects seconds (90) or a duration such as 30s, 10m, 2h or 1h30m"

# Writing the run folder after the final evaluation (model, predictions, report with its plots):
# a fixed part (matplotlib's import and a handful of PNGs took 1.5-3 s on 2 busy cores for the
# tiny test BERT) plus the weights at a slow disk's rate.
WRITE_SECONDS = 3.0
WRITE_BYTES_PER_SECOND = 100e6
# Step and evaluation times vary on a shared machine: plan with this much of the budget spare.
SAFETY = 0.05


def parse_duration(value: object) -> float:
    """Seconds in `value`: a number of seconds (90, 90.5, "90") or "30s", "10m", "2h", "1h30m".

    Raises:
        ValueError: anything else, or a duration that is not positive.
    """
    if isinstance(value, bool):
        raise ValueError(DURATION_HELP)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        seconds = float(value.strip())
    elif isinstance(value, str) and value.strip() and _PART.sub("", value).strip() == "":
        seconds = sum(float(number) * _UNITS[unit.lower()] for number, unit in _PART.findall(value))
    else:
        raise ValueError(DURATION_HELP)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be more than 0 seconds; {DURATION_HELP}")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


@dataclass
class Fit:
    """What the budget bought, decided before training: recorded in recipe.json and metrics.json."""

    epochs: int  # planned (<= the config's)
    max_steps: int | None  # planned optimizer steps when not even one epoch fits, else None
    evaluations: int  # validation passes planned, the one before training excluded
    reason: str


def fit_epochs(available: float, step_seconds: float, steps_per_epoch: int, eval_seconds: float,
               ceiling: int) -> Fit:
    """The most epochs (<= `ceiling`) whose steps and end-of-epoch evaluations fit in `available` s.

    `available` is the time left for training once the final evaluation and writes are reserved.
    When not even one epoch fits, the plan is one epoch cut at the steps that fit, evaluated once.
    """
    epoch_seconds = steps_per_epoch * step_seconds + eval_seconds
    fit = int(available // epoch_seconds) if epoch_seconds > 0 else ceiling
    about = (f"{step_seconds:.3g} s a step x {steps_per_epoch} steps + {eval_seconds:.2g} s evaluation = "
             f"{epoch_seconds:.3g} s an epoch, {available:.0f} s left for training")
    if fit >= ceiling:
        return Fit(ceiling, None, ceiling, f"all {ceiling} epoch(s) fit: {about}")
    if fit >= 1:
        return Fit(fit, None, fit, f"{fit} of {ceiling} epoch(s) fit: {about}")
    steps = max(1, int((available - eval_seconds) // max(step_seconds, 1e-9)))
    steps = min(steps, steps_per_epoch)
    return Fit(1, steps, 1, f"not one epoch fits ({about}): {steps} of {steps_per_epoch} steps, then one evaluation")


def write_seconds(parameters: int) -> float:
    """Reserved for the writes after the last step: the last checkpoint (weights and AdamW's two
    moments), the best weights, the model folder, predictions and report (see WRITE_SECONDS)."""
    return WRITE_SECONDS + 5 * 4 * parameters / WRITE_BYTES_PER_SECOND


@dataclass
class Budget:
    """The run's clock against its budget; knows what one step and one evaluation cost.

    `spent` is the budget a resumed run's earlier processes used (up to their last checkpoint):
    the budget counts the run's training time across resumes.
    """

    seconds: float
    started_at: float = field(default_factory=time.time)
    spent: float = 0.0
    step_seconds: float = 0.0  # measured per optimizer step; updated by every step taken
    eval_seconds: float = 0.0  # one validation pass; updated by every pass
    final_seconds: float = 0.0  # final evaluation (validation + test) and the writes
    max_steps: int | None = None  # global optimizer steps planned when not one epoch fits
    stopped: bool = False  # the run stopped on time (the same on every process)
    fit: Fit | None = None
    measured: dict = field(default_factory=dict)
    _last_step: float | None = None

    def elapsed(self) -> float:
        """Budget used so far, earlier processes of a resumed run included."""
        return self.spent + time.time() - self.started_at

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def reserve(self) -> float:
        """What must stay free after training: one evaluation of the weights reached, the final
        evaluation and the writes, and a safety share of the budget."""
        return self.eval_seconds + self.final_seconds + SAFETY * self.seconds

    def training_seconds(self) -> float:
        """Time left for training steps and their evaluations, at the moment of the call."""
        return self.remaining() - self.final_seconds - SAFETY * self.seconds

    def step_taken(self) -> None:
        """Called after every optimizer step: the step time follows what steps really cost. An
        interval over 3x the estimate (a checkpoint written, a stage prepared) counts as 3x."""
        now = time.time()
        if self._last_step is not None:
            seconds = now - self._last_step
            if self.step_seconds:
                seconds = min(seconds, 3 * self.step_seconds)
            self.step_seconds = 0.8 * self.step_seconds + 0.2 * seconds if self.step_seconds else seconds
        self._last_step = now

    def epoch_boundary(self) -> None:
        """Evaluation and checkpoints happen between epochs: not a step's time."""
        self._last_step = None

    def eval_taken(self, seconds: float) -> None:
        self.eval_seconds = max(self.eval_seconds * 0.5, seconds) if self.eval_seconds else seconds

    def out_of_time(self) -> bool:
        """True when the next step would leave too little for evaluating and finishing."""
        return self.remaining() < self.step_seconds + self.reserve()

    def steps_done(self, global_step: int) -> bool:
        """The planned steps (when not one epoch fits) are done: every process knows it alike."""
        return self.max_steps is not None and global_step >= self.max_steps

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the budget used so far, the plan and the measured costs."""
        return {"seconds": self.seconds, "spent": self.elapsed(), "max_steps": self.max_steps,
                "epochs": self.fit.epochs if self.fit else None, "step_seconds": self.step_seconds,
                "eval_seconds": self.eval_seconds, "final_seconds": self.final_seconds,
                "fit": asdict(self.fit) if self.fit else None, "measured": self.measured}

    def summary(self) -> dict:
        """recipe.json's and metrics.json's `budget`: what the budget bought."""
        return {"seconds": self.seconds, "used_seconds": round(self.elapsed(), 2),
                "stopped_on_time": self.stopped, "measured": self.measured,
                "plan": asdict(self.fit) if self.fit else None,
                "step_seconds_at_end": round(self.step_seconds, 4), "eval_seconds": round(self.eval_seconds, 3),
                "final_reserve_seconds": round(self.final_seconds, 2)}


def resumed_budget(seconds: float, started_at: float, saved: dict) -> Budget:
    """A resumed run's budget (`saved`: state_dict()): its earlier processes' time counts, and its
    plan and measured costs carry over."""
    fit = Fit(**saved["fit"]) if saved.get("fit") else None
    return Budget(seconds, started_at, spent=float(saved.get("spent", 0.0)), step_seconds=saved.get("step_seconds", 0.0),
                  eval_seconds=saved.get("eval_seconds", 0.0), final_seconds=saved.get("final_seconds", 0.0),
                  max_steps=saved.get("max_steps"), fit=fit, measured=saved.get("measured") or {})
