"""seq2seq and causal-lm end to end on tiny random models: scores rise on a learnable date-format task,
the run folder loads with plain transformers, `lobell predict` generates, and a resumed run matches."""

from __future__ import annotations

import json

import pytest
from generation_fixtures import date_files, date_rows, prompt_files, tiny_gpt2, tiny_llama, tiny_t5  # noqa: F401 (fixtures)

from lobell.config import load_config
from lobell.training import runner
from lobell.training.runner import train


def _seq2seq(tiny_t5, files, out, *extra) -> list[str]:
    return ["task=seq2seq", f"model={tiny_t5}", f"data.train={files['train']}", f"data.validation={files['validation']}",
            "epochs=6", "optimizer.lr=3e-3", "batch_size=16", "precision=fp32", "early_stopping.patience=null",
            "generation.max_new_tokens=12", f"output_dir={out}", *extra]


def test_seq2seq_learns_dates_and_saves_a_plain_transformers_model(tiny_t5, date_files, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    run = train(load_config(None, _seq2seq(tiny_t5, date_files, tmp_path / "run")), quiet=True)
    before, after = run.metrics["before"], run.metrics["validation"]
    assert after["chrf"] > before["chrf"] + 15 and after["bleu"] > before["bleu"]
    assert after["rougeL"] >= before["rougeL"] and after["loss"] < before["loss"] - 1
    assert after["token_accuracy"] > 0.5

    model_dir = run.run_dir / "model"
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    assert model.generation_config.max_new_tokens == 12  # the run's generation: settings travel with it
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in (run.run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    inputs = tokenizer([rows[0]["input"]], return_tensors="pt")
    plain = tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True)[0]
    assert plain.strip() == rows[0]["prediction"]  # plain transformers decodes as lobell's evaluation did
    report = (run.run_dir / "report.html").read_text()
    assert "Sample generations" in report and rows[0]["target"] in report
    assert "AutoModelForSeq2SeqLM" in (model_dir / "README.md").read_text()


def test_causal_lm_learns_completions_and_predict_generates(tiny_gpt2, prompt_files, tmp_path):
    from transformers import AutoModelForCausalLM

    from lobell.predict import Predictor, read_prediction_inputs

    overrides = ["task=causal-lm", f"model={tiny_gpt2}", f"data.train={prompt_files['train']}",
                 f"data.validation={prompt_files['validation']}", "epochs=5", "optimizer.lr=3e-3", "batch_size=16",
                 "precision=fp32", "generation.max_new_tokens=12", f"output_dir={tmp_path / 'run'}",
                 "strategy=discriminative", "strategy.lr_decay=0.8"]
    run = train(load_config(None, overrides), quiet=True)
    first = json.loads((run.run_dir / "lrs.json").read_text())[5]  # after the warm-up's first step (LR 0)
    lrs = [first[name] for name in first if name != "step"]  # embeddings ... blocks ... head, in order
    assert len(lrs) >= 3 and all(a < b for a, b in zip(lrs, lrs[1:]))  # discriminative LRs over the LM's groups
    before, after = run.metrics["before"], run.metrics["validation"]
    assert after["perplexity"] < before["perplexity"] / 5 and after["token_accuracy"] > before["token_accuracy"] + 0.3
    assert 0.0 <= after["exact_match"] <= 1.0
    assert AutoModelForCausalLM.from_pretrained(run.run_dir / "model").config.model_type == "gpt2"

    predictor = Predictor.from_run(run.run_dir)
    evaluated = predictor.evaluate_file(prompt_files["validation"])  # `lobell evaluate`: the same scores again
    assert evaluated["loss"] == pytest.approx(after["loss"], rel=1e-4) and evaluated["examples"] == 40
    inputs, frame = read_prediction_inputs(predictor, prompt_files["validation"])
    table = predictor.predict_table(inputs[:4])
    assert list(table.columns) == ["generated"] and len(table) == 4
    assert all("/" in text for text in table["generated"])  # the learnt day/month/year shape
    assert predictor.input_column() in frame.columns  # `lobell predict` prints the prompts next to the outputs


def test_a_resumed_seq2seq_run_matches_an_uninterrupted_one(tiny_t5, date_files, tmp_path, monkeypatch):
    from lobell.training.runner import Interrupted

    common = ["epochs=2", "data.max_train_samples=96"]
    reference = train(load_config(None, _seq2seq(tiny_t5, date_files, tmp_path / "reference", *common)), quiet=True)
    original, calls = runner.train_epoch, []

    def interrupted_in_epoch_two(*args, after_step, **kwargs):
        calls.append(1)

        def step(number: int) -> None:
            after_step(number)
            if len(calls) == 2 and number == 2:
                raise KeyboardInterrupt

        return original(*args, after_step=step, **kwargs)

    monkeypatch.setattr(runner, "train_epoch", interrupted_in_epoch_two)
    cfg = load_config(None, _seq2seq(tiny_t5, date_files, tmp_path / "resumed", *common))
    with pytest.raises(Interrupted):
        train(cfg, quiet=True)
    monkeypatch.setattr(runner, "train_epoch", original)
    resumed = train(cfg, quiet=True, resume=True)
    for key in ("validation", "best_epoch"):
        assert resumed.metrics[key] == pytest.approx(reference.metrics[key], rel=1e-6)


def test_causal_lm_on_chat_messages_learns_the_replies(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    files = {}
    for name, n, seed in [("train", 200, 1), ("validation", 24, 2)]:
        frame = date_rows(n, seed)
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": s}, {"role": "assistant", "content": t}]}) + "\n"
            for s, t in zip(frame.source, frame.target)))
    overrides = ["task=causal-lm", f"model={tiny_llama}", f"data.train={files['train']}",
                 f"data.validation={files['validation']}", "epochs=3", "optimizer.lr=3e-3", "batch_size=16",
                 "precision=fp32", "generation.max_new_tokens=12", f"output_dir={tmp_path / 'run'}"]
    run = train(load_config(None, overrides), quiet=True)
    assert run.metrics["validation"]["loss"] < run.metrics["before"]["loss"] - 1
    rows = [json.loads(line) for line in (run.run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    assert rows[0]["target"] == date_rows(24, 2).target[0] and isinstance(rows[0]["prediction"], str)
    assert AutoModelForCausalLM.from_pretrained(run.run_dir / "model").config.model_type == "llama"
