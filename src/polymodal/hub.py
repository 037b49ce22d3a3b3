"""Pretrained backbones from Hugging Face transformers and timm: where they come from, how
they are built, and how they train (frozen, fine-tuned, or LoRA adapters through peft).

A source is `hf:NAME`, `timm:NAME` or a local folder saved by either library. Hub names are
looked up in the local cache first; with no network a missing one fails at once with one line
saying how to bring it here, never a hang or a stack trace.

A trained polymodal model stores each backbone's architecture (its config) in config.json and
its weights in model.safetensors, so loading one needs neither the hub nor the source folder.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from polymodal.config import EncoderChoice
from polymodal.data.problems import BadInputError

if TYPE_CHECKING:
    from torch import nn

REACH_TIMEOUT_S = 3.0
SKIPPED_FILES = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.mlmodel", "*.gguf"]
ATTENTION_PROJECTIONS = {"query", "key", "value", "q_proj", "k_proj", "v_proj", "qkv", "c_attn"}


class PretrainedUnavailable(BadInputError):
    """A pretrained source that cannot be found or fetched; the message says how to fix it."""


def require(library: str) -> None:
    """Pretrained encoders are an optional install; say how to get them."""
    if importlib.util.find_spec(library) is None:  # without importing it (timm takes seconds)
        raise PretrainedUnavailable(
            f"pretrained encoders need {library}: pip install 'polymodal[pretrained]'"
        )


@dataclass(frozen=True)
class ResolvedSource:
    source: str  # as the user wrote it
    library: str  # "hf" or "timm"
    folder: Path  # local folder holding its config and weights


def resolve_source(source: str, key: str = "text") -> ResolvedSource:
    """A source → a local folder, from the hub cache, a download, or the path itself. `key`
    (the column or kind it is for) only shapes the advice in error messages."""
    if source.startswith("hf:"):
        require("transformers")
        return ResolvedSource(source, "hf", hub_folder(source[3:], source, key))
    if source.startswith("timm:"):
        require("timm")
        return ResolvedSource(source, "timm", hub_folder(timm_repo(source[5:]), source, key))
    folder = Path(source).expanduser()
    config = folder / "config.json"
    if not config.is_file():
        raise PretrainedUnavailable(
            f"encoder source '{source}': {folder} is not a folder saved by transformers or timm "
            "(no config.json); use hf:NAME, timm:NAME or such a folder"
        )
    library = "timm" if "architecture" in json.loads(config.read_text()) else "hf"
    require("timm" if library == "timm" else "transformers")
    return ResolvedSource(source, library, folder)


def timm_repo(name: str) -> str:
    """timm's hub repository for a model name: resnet50.a1_in1k → timm/resnet50.a1_in1k, and
    a name without a weights tag gets timm's default one (resnet50 → timm/resnet50.a1_in1k)."""
    if "." in name:
        return f"timm/{name}"  # as timm names its hub repositories; no need to import timm
    import timm

    config = timm.models.get_pretrained_cfg(name)
    if config is None:
        raise PretrainedUnavailable(f"timm has no model named '{name}' (see timm.list_models())")
    if not config.hf_hub_id:
        raise PretrainedUnavailable(f"timm model '{name}' has no weights on the Hugging Face hub")
    return config.hf_hub_id


def hub_folder(repo: str, source: str, key: str = "text") -> Path:
    """The local snapshot of a hub repository: cached, else downloaded if the hub answers."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    why = offline_reason()  # asked once per process
    if why:
        raise PretrainedUnavailable(not_available_message(repo, source, key, why))
    try:
        return Path(snapshot_download(repo, ignore_patterns=skipped_files(repo)))
    except Exception as error:  # any hub failure (unknown repo, gated model, lost connection)
        raise PretrainedUnavailable(
            f"could not download '{repo}' for encoder source '{source}': "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from None


def skipped_files(repo: str) -> list[str]:
    """Other frameworks' weights, and pickled PyTorch ones where safetensors are there too
    (many repositories hold both: half the download for nothing)."""
    from huggingface_hub import list_repo_files

    if any(name.endswith(".safetensors") for name in list_repo_files(repo)):
        return [*SKIPPED_FILES, "*.bin", "*.pt", "*.pth"]
    return SKIPPED_FILES


def not_available_message(repo: str, source: str, key: str, why: str) -> str:
    from huggingface_hub import constants

    local = repo.rsplit("/", 1)[-1]
    return (
        f"cannot load '{source}': it is not in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}) and {why}. On a machine with internet run "
        f"`hf download {repo} --local-dir {local}`, copy the folder here and pass its path "
        f"instead of '{source}' (e.g. --encoder {key}=./{local})"
    )


@functools.cache
def offline_reason() -> str | None:
    """Why the hub cannot be reached now, or None. Checked with a short timeout in a thread,
    because a name lookup on a closed network can block for much longer than a socket."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(f"{host}:{port} cannot be reached ({type(error).__name__})")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(REACH_TIMEOUT_S)
    return outcome[0] if outcome else f"{host}:{port} did not answer in {REACH_TIMEOUT_S:.0f} s"


# --- building backbones -------------------------------------------------------------------------


def read_architecture(resolved: ResolvedSource) -> dict:
    """What rebuilds the network offline: the transformers config, or timm's config.json."""
    if resolved.library == "timm":
        return json.loads((resolved.folder / "config.json").read_text())
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolved.folder).to_dict()


def build_backbone(library: str, architecture: dict, tower: str | None) -> nn.Module:
    """The backbone with random weights (for loading a saved polymodal model); `tower` is the
    modality's attribute in two-tower models (`text_model`)."""
    require("timm" if library == "timm" else "transformers")
    if library == "timm":
        import timm

        arguments = {**architecture.get("model_args", {}), "num_classes": 0}
        return timm.create_model(architecture["architecture"], pretrained=False, **arguments)
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**architecture)
    return modality_tower(AutoModel.from_config(config), tower)


def load_backbone(resolved: ResolvedSource, tower: str | None) -> nn.Module:
    """The backbone with its pretrained weights."""
    if resolved.library == "timm":
        import timm

        return timm.create_model(f"local-dir:{resolved.folder}", pretrained=True, num_classes=0)
    from transformers import AutoModel

    return modality_tower(AutoModel.from_pretrained(resolved.folder), tower)


def modality_tower(model: nn.Module, tower: str | None) -> nn.Module:
    """The part of a model that reads one modality: CLIP-style models hold a text and a vision
    tower (the modality names its attribute), encoder-decoder audio models (Whisper) an
    encoder."""
    if tower and hasattr(model, tower):
        return getattr(model, tower)
    if getattr(model.config, "is_encoder_decoder", False):
        return model.get_encoder()
    return model


def hidden_size(backbone: nn.Module) -> int:
    """Width of the backbone's output tokens."""
    if hasattr(backbone, "num_features") and not hasattr(backbone, "config"):  # timm
        return int(backbone.num_features)
    config = backbone.config
    for name in ("hidden_size", "d_model", "embed_dim"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    raise BadInputError(f"cannot tell the output width of {type(backbone).__name__}")


def apply_mode(backbone: nn.Module, choice: EncoderChoice) -> nn.Module:
    """Frozen: no gradients, always in eval mode (see PretrainedEncoder.train). Finetune: all
    weights train. LoRA: low-rank adapters on the attention projections train, the rest is
    frozen."""
    if choice.mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(
            r=choice.lora_rank,
            lora_alpha=2 * choice.lora_rank,
            lora_dropout=0.0,
            target_modules=lora_targets(backbone, choice.source),
        )
        backbone = inject_adapter_in_model(config, backbone)
    for name, parameter in backbone.named_parameters():
        trains = choice.mode == "finetune" or (choice.mode == "lora" and "lora_" in name)
        parameter.requires_grad_(trains)
    if choice.gradient_checkpointing and choice.mode != "frozen":
        enable_gradient_checkpointing(backbone)
    return backbone


def lora_targets(backbone: nn.Module, source: str) -> list[str]:
    """Names of the linear layers to adapt: the attention projections where the model has
    them (as the LoRA paper does), else every linear layer."""
    from torch import nn

    linear = {
        name.rsplit(".", 1)[-1]
        for name, module in backbone.named_modules()
        if isinstance(module, nn.Linear)
    }
    if not linear:
        raise BadInputError(f"lora: '{source}' has no linear layers to adapt; use mode finetune")
    return sorted(linear & ATTENTION_PROJECTIONS) or sorted(linear)


def enable_gradient_checkpointing(backbone: nn.Module) -> None:
    if getattr(backbone, "supports_gradient_checkpointing", False):
        backbone.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    elif hasattr(backbone, "set_grad_checkpointing"):  # timm
        backbone.set_grad_checkpointing(True)
