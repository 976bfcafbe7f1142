"""Generation data: completion-only labels are exact, chat turns are split exactly, packing keeps every
token and never lets one example attend to another, T5 in fp16 is refused."""

from __future__ import annotations

import pytest
import torch
from generation_fixtures import char_tokenizer, tiny_gpt2, tiny_llama  # noqa: F401 (fixtures)

from lobell.data.generation import IGNORE, GenerationCollator, chat_pieces, encode_causal, pack, pack_rows
from lobell.errors import LobellError
from lobell.problems.generation import token_loss


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_completion_only_labels_and_masked_positions_add_nothing(tiny_gpt2):
    tokenizer = _tokenizer(tiny_gpt2)
    [example] = encode_causal(tokenizer, ["2001-02-03 ->"], [" 03/02/2001"], completion_only=True, max_length=64)
    prompt = len(tokenizer("2001-02-03 ->")["input_ids"])
    assert example.labels[:prompt] == [IGNORE] * prompt  # every prompt token is masked ...
    completion = example.input_ids[prompt:]
    assert example.labels[prompt:] == completion and completion[-1] == tokenizer.eos_token_id  # ... and no other
    assert tokenizer.decode(completion, skip_special_tokens=True) == " 03/02/2001"

    labels = torch.tensor([example.labels])
    logits = torch.randn(1, len(example.input_ids), 60, requires_grad=True)
    loss = token_loss(causal=True)(logits, labels)
    loss.backward()
    # Position t predicts token t+1: the logits before the completion's first token get no gradient at all.
    assert torch.all(logits.grad[0, : prompt - 1] == 0) and torch.all(logits.grad[0, prompt - 1:-1] != 0)
    expected = torch.nn.functional.cross_entropy(logits[0, prompt - 1:-1], torch.tensor(completion))
    torch.testing.assert_close(loss, expected)

    [every] = encode_causal(tokenizer, ["2001-02-03 ->"], [" 03/02/2001"], completion_only=False, max_length=64)
    assert every.labels[1:] == every.input_ids[1:] and every.labels[0] == IGNORE


def test_chat_turns_split_exactly_at_the_assistant_replies(tiny_gpt2):
    tokenizer = _tokenizer(tiny_gpt2)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2001-02-03"},
                {"role": "assistant", "content": "03/02/2001"}, {"role": "user", "content": "and 1999-12-31?"},
                {"role": "assistant", "content": "31/12/1999"}]
    pieces = chat_pieces(tokenizer, messages)
    whole = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    assert [t for ids, _ in pieces for t in ids] == whole  # nothing lost or added
    learnt = [tokenizer.decode(ids) for ids, is_learnt in pieces if is_learnt]
    assert learnt == ["03/02/2001</s>", "31/12/1999</s>"]  # jinja's trim_blocks drops the template's newline
    [example] = encode_causal(tokenizer, [messages], ["31/12/1999"], completion_only=True, max_length=200)
    kept = tokenizer.decode([t for t in example.labels if t != IGNORE])
    assert kept == "03/02/2001</s>31/12/1999</s>"


def test_packing_keeps_every_token_in_whole_examples():
    items = [{"input_ids": list(range(1, n + 1)), "labels": [IGNORE] + list(range(2, n + 1)), "index": i}
             for i, n in enumerate([5, 9, 3, 7, 2, 8])]
    rows = pack_rows([len(item["input_ids"]) for item in items], 12)
    assert sorted(i for row in rows for i in row) == list(range(6))  # each example once, whole
    assert all(sum(len(items[i]["input_ids"]) for i in row) <= 12 for row in rows)
    batch = pack(items, 12, pad=0)
    real = batch["input_ids"] != 0
    assert int(real.sum()) == sum(len(item["input_ids"]) for item in items)
    for row, ids in zip(batch["position_ids"], batch["input_ids"]):  # positions restart at each example
        starts = (row == 0).nonzero().flatten().tolist()
        assert all(ids[s] == 1 or ids[s] == 0 for s in starts)
    assert int((batch["targets"] != IGNORE).sum()) == sum(len(item["input_ids"]) - 1 for item in items)


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_llama"])
def test_a_packed_example_sees_only_itself(family, request):
    """Logits of each example inside a packed row equal its logits run alone: no attention across examples."""
    from transformers import AutoModelForCausalLM

    from lobell.models.generation import supports_packing

    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(family)).eval()
    assert supports_packing(model)
    examples = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16]]
    items = [{"input_ids": ids, "labels": ids, "prompt_ids": [], "index": i} for i, ids in enumerate(examples)]
    batch = GenerationCollator(0, causal=True, pack_length=32)(items)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for i in pack_rows([len(e) for e in examples], 32)[0]:
            alone = model(input_ids=torch.tensor([examples[i]]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[start:start + len(examples[i])], alone, rtol=1e-4, atol=1e-5)
            start += len(examples[i])
        # The check can fail: without position ids the row is one long sequence and examples see each other.
        mixed = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
        assert not torch.allclose(mixed, packed, atol=1e-3)


def test_t5_in_fp16_is_refused_in_one_sentence():
    from transformers import T5Config

    from lobell.models.generation import check_precision

    with pytest.raises(LobellError, match="overflow in fp16.*precision=bf16"):
        check_precision(T5Config(), "fp16", "t5-small")
    check_precision(T5Config(), "bf16", "t5-small")  # bf16 and fp32 are fine


def test_char_tokenizer_round_trips():
    tokenizer = char_tokenizer(eos_after=True)
    ids = tokenizer("2001-02-03")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.decode(ids, skip_special_tokens=True) == "2001-02-03"
