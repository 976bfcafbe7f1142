"""Text generators: encoder-decoders (T5, BART, Marian: AutoModelForSeq2SeqLM) and decoder-only models
(GPT-2, Llama, Qwen: AutoModelForCausalLM), their tokenizer, layer map and generation settings.

The model keeps its own output layer (the LM head over the vocabulary), so nothing is new: the
layer map's last group ("head") is the final norm and an untied LM head, the groups before it the
embeddings and each block (encoder blocks, then decoder blocks). `save` writes a folder plain
`AutoModelFor{Seq2Seq,Causal}LM.from_pretrained` loads, with generation_config.json holding the
run's `generation:` settings, so `model.generate()` there decodes as lobell's evaluation did.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from lobell.errors import LobellError
from lobell.models.hub import resolve_pretrained
from lobell.models.text import _quiet_transformers
from lobell.strategies.layer_map import LayerMap, layer_map_from_assignment

# T5-family activations overflow fp16's range (the T5 and mT5 model cards; transformers issue #10830).
FP16_UNSAFE = ("t5", "mt5", "umt5", "longt5", "switch_transformers")
_FINAL_NORMS = ("ln_f", "norm", "final_layer_norm", "final_layernorm", "layer_norm")


class GenerationAdapter:
    """A transformers generator (`kind` "seq2seq" or "causal"), its tokenizer and its layer map."""

    def __init__(self, model: nn.Module, tokenizer, name: str, kind: str, modality: str, generation: dict | None = None):
        self.model, self.tokenizer, self.name, self.kind, self.modality = model, tokenizer, name, kind, modality
        self.generation = dict(generation or {})
        self.family = "encoder-decoder" if kind == "seq2seq" else "decoder"  # the recipe's word for it
        if tokenizer.pad_token_id is None:  # GPT-2 and Llama have none: pad with EOS (masked everywhere)
            tokenizer.pad_token = tokenizer.eos_token
        if self.kind == "causal":
            tokenizer.padding_side = "left"  # batched generation continues each prompt from its last token
        self.layer_map: LayerMap = generator_layer_map(model)

    @property
    def auto_class(self):
        import transformers

        return transformers.AutoModelForSeq2SeqLM if self.kind == "seq2seq" else transformers.AutoModelForCausalLM

    @classmethod
    def from_pretrained(cls, name: str, kind: str, modality: str, weights: bool = True,
                        generation: dict | None = None, precision: str = "auto") -> GenerationAdapter:
        """Load a pre-trained generator (`weights=False`: the structure only, for validate and layers)."""
        import transformers
        from transformers import AutoConfig, AutoTokenizer

        auto = transformers.AutoModelForSeq2SeqLM if kind == "seq2seq" else transformers.AutoModelForCausalLM
        path = resolve_pretrained(name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            config = AutoConfig.from_pretrained(path)
            check_precision(config, precision, name)
            with _quiet_transformers():
                model = auto.from_pretrained(path) if weights else auto.from_config(config)
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            what = "an encoder-decoder (seq2seq)" if kind == "seq2seq" else "a causal language model"
            raise LobellError(f"model '{name}' could not be loaded as {what}: {reason}") from None
        return cls(model, tokenizer, name, kind, modality, generation)

    @classmethod
    def load(cls, directory: Path, kind: str, modality: str) -> GenerationAdapter:
        import transformers
        from transformers import AutoTokenizer

        auto = transformers.AutoModelForSeq2SeqLM if kind == "seq2seq" else transformers.AutoModelForCausalLM
        info = json.loads((Path(directory) / "lobell.json").read_text())
        with _quiet_transformers():
            model = auto.from_pretrained(directory).eval()
        return cls(model, AutoTokenizer.from_pretrained(directory), str(directory), kind, modality,
                   info.get("generation"))

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token logits, teacher-forced: (batch, positions, vocabulary)."""
        if self.kind == "seq2seq":
            decoder_ids = _unwrap(model).prepare_decoder_input_ids_from_labels(labels=batch["targets"])
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         decoder_input_ids=decoder_ids, use_cache=False).logits
        if "position_ids" in batch:  # packed rows: no mask, positions restart per example (data/generation.py)
            return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits

    def generate(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> list[str]:
        """The generated text for each example (the prompt left out), with the run's `generation:` settings."""
        model = _unwrap(model)
        settings = {**self.generation, "pad_token_id": self.tokenizer.pad_token_id}
        if self.kind == "seq2seq":
            out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **settings)
        else:
            prompt = batch["prompt_ids"]
            out = model.generate(input_ids=prompt, attention_mask=batch["prompt_mask"], **settings)[:, prompt.shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def save(self, directory: Path, extra: dict | None = None) -> None:
        from transformers import GenerationConfig

        directory = Path(directory)
        with _quiet_transformers():
            self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        try:  # the run's decoding settings travel with the model: plain model.generate() uses them
            base = self.model.generation_config.to_dict() if self.model.generation_config is not None else {}
            GenerationConfig(**{**base, **self.generation}).save_pretrained(directory)
        except ValueError:  # an inconsistent combination transformers refuses: lobell.json still holds them
            pass
        info = {"modality": self.modality, "base_model": self.name, "generation": self.generation, **(extra or {})}
        (directory / "lobell.json").write_text(json.dumps(info, indent=2))


def generator_layer_map(model: nn.Module) -> LayerMap:
    """Embeddings first, then each block of every block list in order (encoder, then decoder), the final norm
    and untied LM head last. A parameter outside the blocks joins the group before it (T5's encoder norm
    stays with the last encoder block); weights tied to the embeddings are listed once, as torch lists them."""
    lists = [name for name, module in model.named_modules() if isinstance(module, nn.ModuleList) and len(module)]
    offsets, group = {}, 0
    for name in lists:
        offsets[name] = group + 1
        group += len(model.get_submodule(name))
    assignment, current = {}, 0
    for name, _ in model.named_parameters():
        owner = next((block for block in lists if name.startswith(block + ".")), None)
        if owner is not None:
            current = offsets[owner] + int(name[len(owner) + 1:].split(".")[0])
        assignment[name] = current
    return layer_map_from_assignment(model, assignment, lm_head_prefixes(model),
                                     f"transformers {type(model).__name__}: embeddings, each block, final norm and "
                                     f"LM head")


def lm_head_prefixes(model: nn.Module) -> list[str]:
    """The final norm(s) and, when not tied to the embeddings, the LM head: the layer map's last group."""
    params = dict(model.named_parameters())  # a tied lm_head.weight is listed once, under the embeddings
    head = [name for name in ("lm_head", "final_logits_bias") if any(p == name or p.startswith(name + ".")
                                                                     for p in params)]
    decoder = _decoder_prefix(model)
    for module_name, module in model.named_modules():
        last = module_name.rpartition(".")[2]
        owner = module_name.rpartition(".")[0]
        if last in _FINAL_NORMS and any(True for _ in module.parameters()) and _is_top_of(owner, decoder):
            head.append(module_name)
    return head


def _decoder_prefix(model: nn.Module) -> str:
    """Where the decoder's top norm lives: seq2seq `decoder` (or `model.decoder`), else the base model."""
    for candidate in ("decoder", "model.decoder"):
        try:
            model.get_submodule(candidate)
            return candidate
        except AttributeError:
            continue
    return getattr(model, "base_model_prefix", "") or ""


def _is_top_of(owner: str, prefix: str) -> bool:
    return owner == prefix


def check_precision(config, precision: str, name: str) -> None:
    """T5-family models produce inf/NaN in fp16: refuse it in one sentence (bf16 and fp32 are fine)."""
    from lobell.training.accelerator import resolve_precision

    if getattr(config, "model_type", "") in FP16_UNSAFE and resolve_precision(precision) == "fp16":
        raise LobellError(f"model '{name}' is a {config.model_type} model, whose activations overflow in fp16 (inf/NaN "
                          f"losses); use precision=bf16 where the GPU supports it, else precision=fp32")


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a DDP / compile wrapper (generate and helpers live there)."""
    while hasattr(model, "module") and not hasattr(model, "generate"):
        model = model.module
    return model


def supports_packing(model: nn.Module) -> bool:
    """Whether the model builds its causal mask through transformers' masking_utils, which reads packed
    sequences from position ids (GPT-2, Llama, Qwen2, Mistral, ... in transformers 5)."""
    module = sys.modules.get(type(_unwrap(model)).__module__)
    source = getattr(module, "__file__", None)
    if not source:
        return False
    return "create_causal_mask(" in Path(source).read_text(encoding="utf-8", errors="ignore")


def loading_snippet(model_dir: Path, modality: str) -> str:
    """The model card's code: plain transformers loads the folder and generates with the run's settings."""
    auto = "AutoModelForSeq2SeqLM" if modality == "seq2seq" else "AutoModelForCausalLM"
    strip = "" if modality == "seq2seq" else "[:, inputs[\"input_ids\"].shape[1]:]  # the prompt left out"
    return f"""With plain transformers (no lobell needed); generation_config.json holds the run's `generation:` settings:

```python
from transformers import {auto}, AutoTokenizer

model_dir = {str(model_dir)!r}  # this folder
model = {auto}.from_pretrained(model_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(model_dir)
inputs = tokenizer(["your input text"], return_tensors="pt")
output = model.generate(**inputs){strip}
print(tokenizer.batch_decode(output, skip_special_tokens=True)[0])
```
"""
