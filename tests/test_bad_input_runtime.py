import pytest
import torch

from test_bad_input import quick_run, small_files, user_error  # noqa: F401
from lobell.cli import main


def test_out_of_memory_in_training_names_the_batch_size(tiny_bert, small_files, tmp_path, capsys, monkeypatch):
    from lobell.models.text import TextAdapter

    real_forward = TextAdapter.forward

    def forward(self, model, batch):
        if model.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_forward(self, model, batch)

    monkeypatch.setattr(TextAdapter, "forward", forward)
    message = user_error(capsys, *quick_run(tiny_bert, small_files, tmp_path / "run"))
    assert message.startswith("error: out of memory during training epoch 1 with batch_size=8; set batch_size: auto")
    assert not (tmp_path / "run" / "model").exists()


def test_truncated_texts_are_reported_in_the_run_log(tiny_bert, small_files, tmp_path, capsys):
    args = [a for a in quick_run(tiny_bert, small_files, tmp_path / "run", "data.max_length=8") if a != "--quiet"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "texts are longer than 8 tokens and were truncated" in err and "train: " in err


@pytest.mark.parametrize("override, fragment", [
    ("epochs=[1", "epochs='[1' is invalid"),
    ("early_stopping.monitor=acc", "early_stopping.monitor='acc' is not a metric of text-classification; use one "
                                   "of accuracy, f1_macro, loss (did you mean 'accuracy'?)"),
])
def test_config_mistakes_found_before_training(override, fragment, tiny_bert, capsys):
    assert fragment in user_error(capsys, "validate", f"model={tiny_bert}", override)


def test_head_widths_must_be_positive(capsys):
    message = user_error(capsys, "validate", "task=image-classification", "model=torchvision/resnet18",
                         "head.hidden=[0]")
    assert "head.hidden.0=0 is invalid: Input should be greater than or equal to 1" in message
