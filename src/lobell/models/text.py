"""Transformers text encoders (BERT family) with a new sequence-classification head."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from lobell.errors import LobellError
from lobell.models.heads import head_from_spec, last_linear, set_submodule, spec_for
from lobell.models.hub import resolve_pretrained
from lobell.problems import PROBLEMS
from lobell.strategies.layer_map import LayerMap, build_layer_map

# transformers' config.problem_type for each problem that has one (problems/).
PROBLEM_TYPES = {name: problem.hf_problem_type for name, problem in PROBLEMS.items() if problem.hf_problem_type}


def head_prefixes(model: nn.Module, new_params: set[str] = frozenset()) -> list[str]:
    """A transformers task model's new layers: every top-level child outside its base model, plus
    any parameter the checkpoint did not hold (e.g. a pooler a sentence encoder never trained)."""
    base = getattr(model, "base_model_prefix", "")
    outside = [name for name, child in model.named_children()
               if name != base and any(True for _ in child.parameters())]
    return outside + sorted(new_params)


def _untrained_pooler(path: Path, model: nn.Module) -> set[str]:
    """BERT pooler weights that a sentence-transformers checkpoint holds but never trained.

    Such an encoder was trained through its own pooling module (`modules.json` lists it; mean
    tokens for all-MiniLM-L6-v2, or the raw first-token state), never through BERT's pooler, so the
    pooler left in the file is the original model's, stale against the encoder below it. Frozen as
    part of the backbone it feeds the classifier poor features (Rotten Tomatoes, 10 head-only
    epochs: 0.59 test accuracy with it frozen, 0.67 with it trained); in the new head it trains.
    """
    if not (Path(path) / "modules.json").is_file() or not (Path(path) / "1_Pooling").is_dir():
        return set()
    return {name for name, _ in model.named_parameters() if ".pooler." in f".{name}"}


class TextAdapter:
    """A transformers `AutoModelForSequenceClassification`, its tokenizer and its layer map."""

    modality = "text"

    def __init__(self, model: nn.Module, tokenizer, name: str, new_params: set[str] = frozenset()):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        # The new head's spec (heads.spec_for plus `classifier`, where it sits; one head per task for
        # multi-task), or None: the task model's own head shape. Saved in config.json as `lobell_head`
        # so `load` can rebuild it.
        self.head: dict | None = getattr(model.config, "lobell_head", None)
        self.layer_map: LayerMap = build_layer_map(
            model, head_prefixes(model, new_params),
            source=f"transformers {type(model).__name__}: embeddings, each block of the repeated block list, new head")

    @classmethod
    def from_pretrained(cls, name: str, num_outputs: int, problem: str, labels: list[str] | None = None,
                        weights: bool = True, head: dict | None = None) -> TextAdapter:
        """Load the encoder and add a new head; `weights=False` builds the structure only.

        `head`: keyword arguments of `heads.build_head` besides the sizes, or `{"tasks": [...]}` (one
        head per task, models/multitask.py); its layers replace the task model's output layer. None
        keeps the task model's own head shape.
        """
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        path = resolve_pretrained(name)
        kwargs = {"num_labels": num_outputs, "problem_type": PROBLEM_TYPES[problem]}
        if labels and len(labels) == num_outputs:  # outputs that are labels (not one value over ordered labels)
            kwargs["id2label"] = dict(enumerate(labels))
            kwargs["label2id"] = {label: i for i, label in enumerate(labels)}
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            with _quiet_transformers():
                new_params: set[str] = set()
                if weights:
                    model, info = AutoModelForSequenceClassification.from_pretrained(
                        path, ignore_mismatched_sizes=True, output_loading_info=True, **kwargs)
                    new_params = set(info["missing_keys"]) | {k if isinstance(k, str) else k[0] for k in info["mismatched_keys"]}
                    new_params |= _untrained_pooler(path, model)
                else:
                    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path, **kwargs))
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LobellError(f"model '{name}' could not be loaded as a text classifier: {reason}") from None
        if getattr(model.config, "lobell_head", None) is not None:
            model.config.lobell_head = None  # a lobell model as the base: its old head was not rebuilt here
        if head is not None:
            replace_output_layer(model, head, num_outputs, name)
        return cls(model, tokenizer, name, new_params)

    @classmethod
    def load(cls, directory: Path) -> TextAdapter:
        """Reload a saved `model/` folder (the same way plain transformers would; the model card shows how)."""
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory)
        config = AutoConfig.from_pretrained(directory)
        spec = getattr(config, "lobell_head", None)
        with _quiet_transformers():
            if spec is None:
                model = AutoModelForSequenceClassification.from_pretrained(directory)
            else:  # rebuild the new head first: from_pretrained would re-initialise a replaced classifier
                model = AutoModelForSequenceClassification.from_config(config)
                set_submodule(model, spec["classifier"], head_from_spec(spec, config.num_labels))
                model.load_state_dict(read_saved_weights(Path(directory)))
                model.eval()
        return cls(model, tokenizer, str(directory))

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def forward_features(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the head group reads from the layers before it, one vector per example (feature cache).

        BERT's pooler belongs to the head when the checkpoint lacked it (a sentence encoder's) and to
        the frozen part otherwise. Raises NotImplementedError for a family not in `_TEXT_HEADS`.
        """
        family = _text_head_family(model)
        output = getattr(model, model.base_model_prefix)(input_ids=batch["input_ids"],
                                                          attention_mask=batch["attention_mask"])
        if family == "bert" and not self._pooler_in_head(model):
            return output.pooler_output
        return output.last_hidden_state[:, 0]

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        """Logits from `forward_features`' output through the model's own head modules."""
        family = _text_head_family(model)
        if family == "bert":
            if self._pooler_in_head(model):
                features = model.bert.pooler(features[:, None])
            return model.classifier(model.dropout(features))
        if family == "distilbert":
            return model.classifier(model.dropout(torch.relu(model.pre_classifier(features))))
        return model.classifier(features[:, None])  # RoBERTa-style heads read position 0 themselves

    def _pooler_in_head(self, model: nn.Module) -> bool:
        return any(name.startswith("bert.pooler.") for name in self.layer_map.groups[-1].param_names)

    def save(self, directory: Path, extra: dict | None = None) -> None:
        with _quiet_transformers():
            self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        head = {"head": self.head} if self.head is not None else {}
        (directory / "lobell.json").write_text(json.dumps({"modality": "text", "base_model": self.name, **head,
                                                           **(extra or {})}, indent=2))


def replace_output_layer(model: nn.Module, head: dict, num_outputs: int, name: str = "the model") -> dict:
    """Put the new head's layers (heads.head_from_spec) where the task model's last Linear outside its base model was
    (BERT's `classifier`, DistilBERT's `classifier` after its `pre_classifier`, RoBERTa's
    `classifier.out_proj`), and record the spec in `model.config.lobell_head` (save_pretrained writes it)."""
    base = getattr(model, "base_model_prefix", "")
    classifier = last_linear(model, tuple(child for child, _ in model.named_children() if child != base))
    if classifier is None:
        raise LobellError(f"model '{name}' has no linear output layer outside its encoder for head: to replace; "
                          f"remove the head section")
    in_features = model.get_submodule(classifier).in_features
    spec = {**spec_for(in_features, head), "classifier": classifier}
    set_submodule(model, classifier, head_from_spec(spec, num_outputs))
    model.config.lobell_head = spec
    return spec


def read_saved_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The state dict save_pretrained wrote: model.safetensors, or its shards listed in the index."""
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if not index.is_file():
        return load_file(directory / "model.safetensors")
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return {key: value for shard in shards for key, value in load_file(directory / shard).items()}


# Sequence-classification heads whose input is the encoder's first-token state (BERT: or its pooler
# output), by config.model_type: the families whose head split the feature cache knows.
_TEXT_HEADS = {"bert": "bert", "distilbert": "distilbert", "roberta": "roberta", "xlm-roberta": "roberta",
               "camembert": "roberta", "electra": "roberta"}


def _text_head_family(model: nn.Module) -> str:
    model_type = getattr(model.config, "model_type", "?")
    if model_type not in _TEXT_HEADS:
        raise NotImplementedError(f"lobell does not know where the head of a '{model_type}' model starts")
    return _TEXT_HEADS[model_type]


class _quiet_transformers:
    """Silence the 'newly initialized weights' warning: lobell reports the new head itself."""

    def __enter__(self):
        self.logger = logging.getLogger("transformers")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)
        from transformers.utils import logging as hf_logging

        self.hf_level = hf_logging.get_verbosity()
        self.bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        self.logger.setLevel(self.level)
        hf_logging.set_verbosity(self.hf_level)
        if self.bars:
            hf_logging.enable_progress_bar()
