"""LoRA and distillation in the model card and report.html, from lora.json and distillation.json."""

from __future__ import annotations

import json
from pathlib import Path

from lobell.report import html


def read(run_dir: Path, name: str) -> dict:
    """A run's lora.json or distillation.json; {} when absent or unreadable (the section is left out)."""
    try:
        value = json.loads((Path(run_dir) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def lora_rows(lora: dict) -> list[tuple[str, str]]:
    return [("adapters", f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')} on "
                         f"{lora.get('adapted_layers')} layers ({', '.join(lora.get('target_modules') or [])})"),
            ("trainable parameters", f"{lora.get('trainable_params', 0):,} of {lora.get('base_params', 0):,} "
                                     f"({lora.get('trainable_share', 0):.2%})"),
            ("weights + gradients + optimizer state", f"~{lora.get('training_state_mb', 0):.1f} MB vs "
                                                      f"{lora.get('full_training_state_mb', 0):.1f} MB for full "
                                                      f"fine-tuning (activations not counted)"),
            ("saved model/", "adapters merged into plain weights" if lora.get("merged") else
             "a peft adapter folder (adapter_config.json names the base model)")]


def distillation_header(record: dict) -> list[str]:
    return ["", "teacher", "student"] + (["student without teacher"] if record.get("control") else [])


def distillation_rows(record: dict) -> list[tuple]:
    """One row per measure: teacher, student, and (distill.control) the same student trained without the teacher."""
    teacher, student, control = record.get("teacher") or {}, record.get("student") or {}, record.get("control")
    extra = (lambda value: (value,)) if control else (lambda value: ())
    rows = [("model", teacher.get("model", "?"), student.get("model", "?"), *extra(student.get("model", "?"))),
            ("parameters", teacher.get("parameters"), student.get("parameters"), *extra(student.get("parameters"))),
            ("inference samples / s (validation)", teacher.get("samples_per_second"), student.get("samples_per_second"),
             *extra(""))]
    for split in ("validation", "test"):
        names = [n for n in (teacher.get(split) or {}) if n in (student.get(split) or {})]
        rows += [(f"{split} {name}", teacher[split][name], student[split][name],
                  *extra(((control or {}).get(split) or {}).get(name, ""))) for name in names]
    return rows


def _verdict(record: dict) -> str:
    verdict = record.get("verdict")
    if not verdict:
        return ""
    said = "helped" if verdict.get("helped") else "did NOT help"
    return (f" Distillation {said}: validation {verdict.get('monitor')} {_cell(verdict.get('student'))} with the "
            f"teacher vs {_cell(verdict.get('student_without_teacher'))} for the same student trained without it.")


def markdown(run_dir: Path) -> str:
    """The model card's LoRA and Distillation sections ('' when the run used neither)."""
    parts = []
    lora = read(run_dir, "lora.json")
    if lora:
        parts.append("## LoRA\n\nTrained with LoRA adapters (strategy=lora, via peft); only they and the new head "
                     "trained.\n\n" + _table(["", ""], lora_rows(lora)) + "\n")
    record = read(run_dir, "distillation.json")
    if record:
        intro = (f"A student distilled from `{(record.get('teacher') or {}).get('source')}` (temperature "
                 f"{record.get('temperature')}, alpha {record.get('alpha')}): {record.get('size_ratio', 0):.0%} of the "
                 f"teacher's parameters at {record.get('speedup', 0):.1f}x its inference speed." + _verdict(record))
        rows = [tuple(map(_cell, row)) for row in distillation_rows(record)]
        parts.append(f"## Distillation\n\n{intro}\n\n" + _table(distillation_header(record), rows) + "\n")
    return "\n".join(parts)


def html_parts(run_dir: Path) -> list[str]:
    """report.html's pieces: a LoRA table and a teacher-vs-student table (empty when unused)."""
    parts = []
    lora = read(run_dir, "lora.json")
    if lora:
        parts += ["<h3>LoRA</h3>", html.table(["", ""], lora_rows(lora), ident="lora")]
    record = read(run_dir, "distillation.json")
    if record:
        parts += ["<h3>Distillation: student vs teacher</h3>",
                  html.paragraph(f"teacher {(record.get('teacher') or {}).get('source')}; temperature "
                                 f"{record.get('temperature')}, alpha {record.get('alpha')}." + _verdict(record), "muted"),
                  html.table(distillation_header(record), distillation_rows(record), ident="distillation")]
    return parts


def peft_snippet(model_dir: Path, base_model: str, num_labels: int) -> str:
    """How to load a model/ folder saved with lora.merge: false; the base as peft recorded it (a resolved path)."""
    base_model = read(model_dir, "adapter_config.json").get("base_model_name_or_path") or base_model
    return f"""This folder holds LoRA adapters (lora.merge: false), not full weights: `lobell predict` loads it, or peft:

```python
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model_dir = {str(model_dir)!r}  # this folder
base = AutoModelForSequenceClassification.from_pretrained({base_model!r}, num_labels={num_labels})
model = PeftModel.from_pretrained(base, model_dir).merge_and_unload().eval()  # adapters + the trained head
tokenizer = AutoTokenizer.from_pretrained(model_dir)
```
"""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(header: list[str], rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)
