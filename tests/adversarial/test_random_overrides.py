"""50 random invalid KEY=VALUE overrides (seeded): each is exit code 2 and one `error:` line, never a traceback."""

from __future__ import annotations

import random
import string

import pytest
from test_bad_input import user_error

SEED, COUNT = 50, 50
SECTIONS = ["data", "strategy", "optimizer", "scheduler", "loss", "early_stopping", "checkpoint", "speed", "lora",
            "mixup", "head"]
INTEGERS = ["epochs", "seed", "grad_accum", "log_every", "checkpoint.keep", "checkpoint.every_steps",
            "early_stopping.patience", "data.max_train_samples", "eval_batch_size"]
POSITIVE = ["optimizer.lr", "epochs", "grad_accum", "batch_size", "checkpoint.keep", "log_every"]
CHOICES = ["precision", "task", "augment", "tracking", "strategy", "optimizer", "scheduler", "loss.class_weights"]
WRONG_TYPES = ["three", "[1, 2]", "{a: 1}", "1.5", "nan", "inf", "1e999", "∞"]
JUNK = ["three", "[1, 2]", "{a: 1}", "true", "null", "''", "1.5.2", "∞", "0x", "- 1", "~", "[", "{", "'open", '"',
        "!!python/object/apply:os.system ['touch /tmp/x']", "&anchor", "*alias", "%", "@", "`", "1e999", "nan", "-inf"]


# (Whitespace around a key is stripped, so "epochs =3" is valid and not among them.)
ODD_KEYS = ["épochs", "ep ochs", "EPOCHS", "epochs;", "optimizer/lr", "optimizer-lr"]


def _word(rng: random.Random, alphabet: str = string.ascii_lowercase + "_") -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 12)))


def invalid_override(rng: random.Random) -> str:
    """One override that lobell must refuse, drawn from many kinds of mistakes."""
    kind = rng.choice(["unknown key", "unknown nested key", "wrong type", "out of range", "bad choice", "syntax",
                       "section as scalar", "too deep", "odd key"])
    if kind == "unknown key":
        return f"{_word(rng)}x={rng.choice(JUNK + ['3', 'yes'])}"
    if kind == "unknown nested key":
        return f"{rng.choice(SECTIONS)}.{_word(rng)}q={rng.choice(JUNK + ['3'])}"
    if kind == "wrong type":
        return f"{rng.choice(INTEGERS)}={rng.choice(WRONG_TYPES)}"
    if kind == "out of range":
        return f"{rng.choice(POSITIVE)}={rng.choice(['0', '-1', '-0.5', '-1e-5', str(-rng.randint(1, 10**9))])}"
    if kind == "bad choice":
        return f"{rng.choice(CHOICES)}={_word(rng, string.ascii_letters + string.digits + '-')}"
    if kind == "syntax":
        return rng.choice(["=5", "=", "epochs==3", ".lr=1", "optimizer..lr=1", "optimizer.=1", "epochs.=3",
                           " =1", "epochs=[1", "epochs={"])
    if kind == "section as scalar":
        return f"{rng.choice(SECTIONS[:8])}={rng.choice(['3', 'true', '[1]', 'yes', 'text'])}"
    if kind == "too deep":
        return f"{rng.choice(INTEGERS)}.{_word(rng)}=1"
    return rng.choice(ODD_KEYS) + "=3"


OVERRIDES = [invalid_override(random.Random(SEED * 1000 + i)) for i in range(COUNT)]


@pytest.mark.parametrize("override", OVERRIDES, ids=[f"{i:02d}" for i in range(COUNT)])
def test_a_random_invalid_override_is_one_error_line(override, tiny_bert, sentiment_files, capsys):
    message = user_error(capsys, "validate", f"model={tiny_bert}", f"data.train={sentiment_files['train']}", override)
    assert message.startswith("error: ") and len(message) > 20, message
