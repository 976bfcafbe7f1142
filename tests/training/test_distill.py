"""Knowledge distillation: Hinton's loss, a teacher that runs once per example, a student that learns from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_bert, sentiment_rows
from lobell.config import load_config
from lobell.errors import LobellError
from lobell.models.text import TextAdapter
from lobell.training import distill
from lobell.training.distill import DistillationLoss, _Loaded, label_order, soft_loss
from lobell.training.runner import train, with_l1


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_soft_loss_is_hintons_formula_on_a_tiny_case():
    student, teacher, t = np.array([[1.0, 0.0, -1.0], [0.2, 0.4, 3.0]]), np.array([[0.5, 2.0, 0.0], [1.0, -1.0, 2.0]]), 2.0
    p_teacher, p_student = _softmax(teacher / t), _softmax(student / t)
    kl = (p_teacher * (np.log(p_teacher) - np.log(p_student))).sum(axis=1).mean()  # batch mean of per-example KL
    got = soft_loss(torch.tensor(student), torch.tensor(teacher), "classification", t)
    assert float(got) == pytest.approx(t * t * kl, rel=1e-6)
    assert float(soft_loss(torch.tensor(teacher), torch.tensor(teacher), "classification", t)) == pytest.approx(0, abs=1e-7)

    q, s = 1 / (1 + np.exp(-teacher / t)), 1 / (1 + np.exp(-student / t))
    bce = -(q * np.log(s) + (1 - q) * np.log(1 - s)).mean()
    assert float(soft_loss(torch.tensor(student), torch.tensor(teacher), "multi-label", t)) == pytest.approx(t * t * bce)
    mse = ((student[:, 0] - teacher[:, 0]) ** 2).mean()  # regression: no temperature
    assert float(soft_loss(torch.tensor(student[:, :1]), torch.tensor(teacher[:, :1]), "regression", t)) == pytest.approx(mse)


def test_distillation_loss_picks_teacher_rows_by_index_and_mixes_by_alpha():
    cached = torch.tensor([[5.0, -5.0], [-5.0, 5.0], [0.0, 0.0]])
    logits, targets, index = torch.tensor([[0.3, -0.2], [1.0, 0.5]]), torch.tensor([0, 1]), torch.tensor([2, 0])
    soft = soft_loss(logits, cached[index], "classification", 2.0)
    hard = F.cross_entropy(logits, targets)
    for alpha in (0.0, 0.25, 1.0):
        loss = DistillationLoss(F.cross_entropy, cached, "classification", 2.0, alpha)
        torch.testing.assert_close(loss(logits, targets, index), alpha * soft + (1 - alpha) * hard)
    params = [torch.tensor([1.0, -2.0])]
    penalised = with_l1(DistillationLoss(F.cross_entropy, cached, "classification", 2.0, 0.5), params, 0.1)
    assert penalised.uses_index  # the loop keeps passing the indices through the L1 wrapper
    torch.testing.assert_close(penalised(logits, targets, index), 0.5 * soft + 0.5 * hard + 0.3)


@pytest.fixture()
def data(tmp_path) -> list[str]:
    files = {}
    for name, n, seed in [("train", 300, 1), ("validation", 60, 2), ("test", 60, 3)]:
        files[name] = tmp_path / f"{name}.csv"
        sentiment_rows(n, seed).to_csv(files[name], index=False)
    return [f"data.{name}={path}" for name, path in files.items()] + [
        "scheduler.warmup_ratio=0", "batch_size=16", "precision=fp32", "strategy=full"]


def test_student_learns_from_a_teacher_that_runs_once_per_example(tiny_bert, data, tmp_path, monkeypatch):
    teacher = train(load_config(None, [f"model={tiny_bert}", *data, "optimizer.lr=3e-3", "strategy.backbone_lr_scale=1",
                                       "epochs=4", f"output_dir={tmp_path / 'teacher'}"]), quiet=True)
    assert teacher.metrics["validation"]["accuracy"] > 0.8

    seen = {"teacher": 0}
    forward = TextAdapter.forward

    def counting(self, model, batch):
        if model.config.hidden_size == 32:  # the teacher; the student is 16 wide
            seen["teacher"] += len(batch["input_ids"])
        return forward(self, model, batch)

    monkeypatch.setattr(TextAdapter, "forward", counting)
    student_model = make_tiny_bert(tmp_path / "small", hidden=16, layers=1)
    run = tmp_path / "student"
    result = train(load_config(None, [f"model={student_model}", *data, "optimizer.lr=1e-2", "epochs=4",
                                      "early_stopping.patience=null", f"distill.teacher={teacher.run_dir}",
                                      f"output_dir={run}"]), quiet=True)
    # Once over train (the cached soft targets), validation and test (the teacher's scores); not once per epoch.
    assert seen["teacher"] == 300 + 60 + 60
    assert result.metrics["validation"]["accuracy"] > 0.75  # chance is ~0.5

    record = json.loads((run / "distillation.json").read_text())
    assert record["student"]["parameters"] < record["teacher"]["parameters"]
    assert record["teacher"]["validation"]["accuracy"] == pytest.approx(teacher.metrics["validation"]["accuracy"])
    assert record["student"]["validation"]["accuracy"] == result.metrics["validation"]["accuracy"]
    assert record["teacher"]["samples_per_second"] > 0 and record["student"]["samples_per_second"] > 0
    assert "## Distillation" in (run / "model/README.md").read_text()
    assert 'id="distillation"' in (run / "report.html").read_text()
    # distill.control: the same student on the same data and epochs without the teacher, judged on validation.
    control = json.loads((run / "distill-control" / "metrics.json").read_text())
    assert not (run / "distill-control" / "distillation.json").exists()  # it really ran without the teacher
    assert record["control"]["validation"] == control["validation"]
    verdict = record["verdict"]
    assert verdict == result.metrics["distillation"] == json.loads((run / "metrics.json").read_text())["distillation"]
    assert verdict["student_without_teacher"] == control["validation"]["accuracy"]
    assert verdict["helped"] == (verdict["student"] > verdict["student_without_teacher"])
    assert "student without teacher" in (run / "report.html").read_text()


def test_distillation_that_did_not_help_warns_and_says_so_in_distillation_json(tmp_path):
    from lobell.console import Reporter

    (tmp_path / "distillation.json").write_text(json.dumps({"teacher": {}, "student": {}}))
    lines = []
    reporter = Reporter(quiet=True)
    reporter.log = reporter.warn = lines.append  # warn: shown even with --quiet
    student, control = {"validation": {"rmse": 0.50}}, {"validation": {"rmse": 0.40}, "test": {"rmse": 0.41}}
    verdict = distill.judge(tmp_path, "rmse", student, control, reporter, main=True)  # rmse: lower is better
    assert verdict == {"monitor": "rmse", "student": 0.5, "student_without_teacher": 0.4, "helped": False}
    assert lines[-1].startswith("WARNING: distillation did not help: validation rmse 0.5000 with the teacher vs 0.4000")
    record = json.loads((tmp_path / "distillation.json").read_text())
    assert record["control"] == control and record["verdict"] == verdict
    assert distill.judge(tmp_path, "rmse", control, student, reporter, main=True)["helped"]
    assert lines[-1].startswith("distillation helped")


def _saved_teacher(tiny_bert, folder, task: str, labels: list[str] | None):
    problem = task.partition("-")[2]
    adapter = TextAdapter.from_pretrained(str(tiny_bert), len(labels) if labels else 1, problem, labels)
    folder.mkdir()
    adapter.save(folder, {"task": task, "labels": labels})
    return folder


def test_a_teacher_with_other_labels_or_another_task_is_one_clear_error(tiny_bert, data, tmp_path):
    three = _saved_teacher(tiny_bert, tmp_path / "three", "text-classification", ["pos", "neg", "meh"])
    cfg = load_config(None, [f"model={tiny_bert}", *data, f"distill.teacher={three}", f"output_dir={tmp_path / 'a'}"])
    with pytest.raises(LobellError) as error:
        train(cfg, quiet=True)
    message = str(error.value)
    assert message.startswith(f"distill.teacher='{three}' predicts labels ['pos', 'neg', 'meh'] but the data has "
                              f"labels ['neg', 'pos']")
    assert "\n" not in message and message.count(". ") == 0

    scorer = _saved_teacher(tiny_bert, tmp_path / "scorer", "text-regression", None)
    cfg = load_config(None, [f"model={tiny_bert}", *data, f"distill.teacher={scorer}", f"output_dir={tmp_path / 'b'}"])
    with pytest.raises(LobellError, match="is a text-regression model but the task is text-classification"):
        train(cfg, quiet=True)
    with pytest.raises(LobellError, match="distill.teacher='nowhere' is not a lobell run folder"):
        train(load_config(None, [f"model={tiny_bert}", *data, "distill.teacher=nowhere",
                                 f"output_dir={tmp_path / 'c'}"]), quiet=True)


def test_teacher_outputs_follow_the_students_label_order():
    loaded = _Loaded(None, None, "text-classification", ["pos", "neg"], "teacher")
    assert label_order("t", loaded, "text-classification", ["neg", "pos"]) == [1, 0]
    assert label_order("t", loaded, "text-classification", ["pos", "neg"]) is None
