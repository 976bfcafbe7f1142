"""lobell's warm-up schedules are transformers' own, factor for factor (written out so that an image
run does not import transformers.optimization, and with it peft)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from lobell.training.optim import WARMUP_SCHEDULES

THEIRS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


@pytest.mark.parametrize("name", THEIRS)
@pytest.mark.parametrize("warmup, total", [(0, 10), (3, 17), (5, 5), (1, 1), (10, 100)])
def test_each_warmup_schedule_matches_transformers(name, warmup, total):
    from transformers import get_scheduler

    ours, theirs = (torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5) for _ in range(2))
    schedules = (LambdaLR(ours, WARMUP_SCHEDULES[name](warmup, total)),
                 get_scheduler(THEIRS[name], theirs, num_warmup_steps=warmup, num_training_steps=total))
    seen = []
    for _ in range(total + 2):
        assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], abs=1e-12)
        seen.append(ours.param_groups[0]["lr"])
        for optimizer, schedule in zip((ours, theirs), schedules):
            optimizer.step()
            schedule.step()
    if (warmup, total) == (10, 100):  # halfway up the warm-up, whatever follows it
        assert seen[5] == pytest.approx(0.25) and seen[10] == pytest.approx(0.5)


def test_training_code_does_not_import_transformers_or_peft():
    code = ("import sys, lobell.training.runner; "
            "print(sorted(m for m in ('transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
