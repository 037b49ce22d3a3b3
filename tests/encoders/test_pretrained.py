"""Pretrained encoders from local folders: every modality end to end, each training mode, the
embedding cache, saved models loading offline, and the one-line message for a missing hub model.

The models are tiny random ones made in the test (tests/pretrained_models.py): no network.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from polymodal.config import Config, ConfigError
from polymodal.data.cache import FeatureCache
from polymodal.encoders.pretrained import summarise
from polymodal.model import Model
from polymodal.presets import configure_encoders
from polymodal.training import embeddings
from polymodal.training.budget import LearningRateShape
from polymodal.training.module import PolymodalModule
from tests import pretrained_models
from tests.media import shapes_and_tones, write_mp4

ROOT = Path(__file__).resolve().parents[2]
TINY = {"dim": 32, "layers": 1, "heads": 2}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return {
        name: getattr(pretrained_models, f"{name}_folder")(root / name)
        for name in ("bert", "vit", "timm", "wav2vec2", "videomae")
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_and_tones(tmp_path_factory.mktemp("data"), rows=32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    rows = []
    for index in range(16):
        bright = index % 2 == 0
        write_mp4(folder / f"{index}.mp4", brightness=220 if bright else 40, frames=4)
        rows.append({"clip": f"{index}.mp4", "label": "bright" if bright else "dark"})
    pd.DataFrame(rows).to_csv(folder / "clips.csv", index=False)
    return folder / "clips.csv"


def config_for(encoders: dict, epochs: int = 2) -> Config:
    return Config.model_validate(
        {"model": {**TINY, "encoders": encoders}, "train": {"max_epochs": epochs, "batch_size": 8}}
    )


def fit(data, inputs, encoders, out=None, cache=None, epochs=2) -> Model:
    model = Model(target="label", inputs=inputs, config=config_for(encoders, epochs), cache=cache)
    return model.fit(data, out=out, overwrite=True)


def backbone_of(model: Model, column: str) -> torch.nn.Module:
    return model.net_.encoders[model.net_.input_names.index(column)].backbone


def source_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The source's weights under the names its library gives them once loaded (transformers
    renames some, e.g. ViT's query/key/value, as it loads them)."""
    if json.loads((folder / "config.json").read_text()).get("architecture"):  # timm's format
        return load_file(folder / "model.safetensors")
    from transformers import AutoModel

    return AutoModel.from_pretrained(folder).state_dict()


def matching(backbone: torch.nn.Module, weights: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(weights equal to the source's, weights compared), matched by name suffix."""
    state = {name.replace(".base_layer", ""): t for name, t in backbone.state_dict().items()}
    equal = compared = 0
    for name, tensor in weights.items():
        key = next((k for k in state if k.endswith(name) or name.endswith(k)), None)
        if key is None or state[key].shape != tensor.shape:
            continue
        compared += 1
        equal += bool(torch.equal(state[key], tensor))
    return equal, compared


def check_weights(backbone: torch.nn.Module, source: Path, mode: str) -> None:
    """Frozen and LoRA keep every pretrained weight as the source folder has it (LoRA adds
    adapters beside them); fine-tuning changes most of them."""
    equal, compared = matching(backbone, source_weights(source))
    assert compared >= 20, f"only {compared} of the source's weights found in the backbone"
    lora = [name for name in backbone.state_dict() if "lora_" in name]
    if mode == "finetune":
        assert equal < compared / 2, "fine-tuning left the backbone's weights unchanged"
        assert not lora
    else:
        assert equal == compared, f"{mode}: {compared - equal} pretrained weights changed"
        assert bool(lora) == (mode == "lora")


# --- every modality, each mode --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["frozen", "finetune", "lora"])
def test_text_encoder_trains_in_each_mode(data, sources, mode):
    model = fit(data, ["comment"], {"text": {"source": str(sources["bert"]), "mode": mode}})
    assert len(model.predict(data)) == 32
    tokenizer = Tokenizer.from_str(model.schema_.input("comment").tokenizer)
    assert tokenizer.encode("Sample number 7").tokens == ["[CLS]", "sample", "number", "7", "[SEP]"]
    check_weights(backbone_of(model, "comment"), sources["bert"], mode)


def test_lora_adapters_train(data, sources):
    model = fit(data, ["comment"], {"text": {"source": str(sources["bert"]), "mode": "lora"}})
    adapters = {
        name: tensor
        for name, tensor in backbone_of(model, "comment").state_dict().items()
        if "lora_B" in name
    }
    assert adapters and any(tensor.abs().sum() > 0 for tensor in adapters.values())  # B starts at 0


@pytest.mark.parametrize(
    ("source", "mode"),
    [("vit", "frozen"), ("vit", "finetune"), ("vit", "lora"), ("timm", "frozen"),
     ("timm", "finetune")],
)  # fmt: skip  # (the timm ResNet has no linear layer for LoRA to adapt)
def test_image_encoder_from_transformers_and_timm_folders(data, sources, source, mode):
    model = fit(data, ["picture"], {"image": {"source": str(sources[source]), "mode": mode}})
    state = model.schema_.input("picture")
    assert (state.size, state.channels) == (32, 3)  # from the processor / timm config
    assert model.predict(data)["label_predicted"].notna().all()
    check_weights(backbone_of(model, "picture"), sources[source], mode)


@pytest.mark.parametrize("mode", ["frozen", "finetune", "lora"])
def test_audio_encoder_from_wav2vec2_folder(data, sources, mode):
    model = fit(data, ["sound"], {"audio": {"source": str(sources["wav2vec2"]), "mode": mode}})
    state = model.schema_.input("sound")
    assert state.settings.sample_rate == 16000 and state.pretrained.input_name == "input_values"
    assert len(model.predict(data)) == 32
    check_weights(backbone_of(model, "sound"), sources["wav2vec2"], mode)


@pytest.mark.parametrize(
    ("source", "mode"), [("videomae", "finetune"), ("videomae", "lora"), ("timm", "finetune")]
)
def test_video_encoder_from_a_video_model_or_an_image_model_per_frame(clips, sources, source, mode):
    model = fit(clips, ["clip"], {"video": {"source": str(sources[source]), "mode": mode}})
    state = model.schema_.input("clip")
    assert state.frames == (4 if source == "videomae" else 8)  # VideoMAE reads 4 frames here
    assert len(model.predict(clips)) == 16
    check_weights(backbone_of(model, "clip"), sources[source], mode)


def test_pretrained_and_scratch_encoders_mix_per_column(data, sources):
    encoders = {"comment": str(sources["bert"]), "image": str(sources["timm"])}
    model = fit(data, ["comment", "picture", "sound", "colour"], encoders)
    names = [type(encoder).__name__ for encoder in model.net_.encoders]
    assert names == ["PretrainedEncoder", "PretrainedEncoder", "AudioCNN", "CategoryEncoder"]


# --- the embedding cache ------------------------------------------------------------------------


def test_frozen_encoder_runs_once_per_distinct_row_and_never_on_a_second_fit(
    data, sources, tmp_path, monkeypatch
):
    computed = []
    original = embeddings.compute

    def counting(encoder, name, item, rows, batch_size):
        computed.append(len(rows))
        return original(encoder, name, item, rows, batch_size)

    monkeypatch.setattr(embeddings, "compute", counting)
    cache = FeatureCache(tmp_path / "cache")
    encoders = {"image": str(sources["vit"])}
    fit(data, ["picture"], encoders, cache=cache, epochs=3)
    assert computed == [32]  # once per row, not once per epoch
    computed.clear()
    fit(data, ["picture"], encoders, cache=cache, epochs=1)
    assert computed == []  # every embedding came from the disk cache


def test_cached_embeddings_give_the_same_outputs_as_the_live_backbone(data, sources):
    model = fit(
        data, ["comment", "picture"], {"text": str(sources["bert"]), "image": str(sources["vit"])}
    )
    live = model.forward(model.encode(data))["label"]
    cached = embeddings.embed_frozen_inputs(
        model.net_, model.encode(data), FeatureCache(enabled=False)
    )
    assert "embedding" in cached["comment"] and "values" not in cached["picture"]
    from_cache = model.forward(cached)["label"]
    np.testing.assert_allclose(live, from_cache, atol=1e-5)


# --- saving and loading offline -----------------------------------------------------------------


def test_saved_model_predicts_offline_in_a_fresh_process_without_its_sources(
    data, sources, tmp_path
):
    copies = {name: tmp_path / "src" / name for name in ("bert", "wav2vec2")}
    for name, folder in copies.items():
        folder.parent.mkdir(exist_ok=True)
        subprocess.run(["cp", "-r", str(sources[name]), str(folder)], check=True)
    encoders = {
        "text": {"source": str(copies["bert"]), "mode": "lora"},
        "audio": str(copies["wav2vec2"]),
        "image": str(sources["timm"]),
    }
    out = tmp_path / "model"
    model = fit(data, ["comment", "sound", "picture"], encoders, out=out)
    expected = model.predict_proba(data).to_numpy()
    subprocess.run(["rm", "-r", str(tmp_path / "src")], check=True)  # the sources are gone
    script = (
        "import sys, numpy as np; from polymodal import Model; "
        "m = Model.load(sys.argv[1]); np.save(sys.argv[3], m.predict_proba(sys.argv[2]).to_numpy())"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["HF_HOME"] = str(tmp_path / "empty-hf-home")
    result = subprocess.run(
        [sys.executable, "-c", script, str(out), str(data), str(tmp_path / "p.npy")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-5)
    saved = json.loads((out / "config.json").read_text())
    assert saved["schema"]["inputs"][0]["pretrained"]["architecture"]["model_type"] == "bert"


# --- hub names without a network ----------------------------------------------------------------


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "closed endpoint"])
def test_hub_name_without_network_fails_at_once_with_one_line(data, tmp_path, offline):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "POLYMODAL_PROGRESS": "0"}
    env.pop("HF_HUB_OFFLINE", None)
    if offline == "HF_HUB_OFFLINE":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there
    command = [str(Path(sys.executable).parent / "polymodal"), "train", str(data)]
    command += ["--target", "label", "--encoder", "text=hf:bert-base-uncased"]
    command += ["--out", str(tmp_path / "m")]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - started
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "bert-base-uncased" in lines[0] and "hf download" in lines[0]
    assert "--encoder comment=" in lines[0]
    # "at once": no waiting on network retries; measured against the imports any such run
    # pays, which take 2 s on an idle machine and over 10 s on a busy one
    assert seconds < importing_seconds(env) + 5, f"took {seconds:.1f} s"
    assert not (tmp_path / "m").exists()


def importing_seconds(env: dict) -> float:
    """Seconds a fresh process takes to import what `polymodal train` with a hub encoder
    imports (torch, transformers, the package)."""
    command = [sys.executable, "-c", "import torch, transformers, polymodal.model"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, timeout=60)
    return time.perf_counter() - started


# --- options --------------------------------------------------------------------------------------


def test_encoder_options_preset_and_modes():
    config = Config()
    configure_encoders(config, ["text=hf:bert-base-uncased"], "accurate", ["image=lora"], True)
    text = config.model.encoder_choice("comment", "text")
    image = config.model.encoder_choice("picture", "image")
    assert text.source == "hf:bert-base-uncased" and text.mode == "frozen"  # yours beats the preset
    assert image.source.startswith("timm:") and image.mode == "lora"
    assert image.gradient_checkpointing and image.pretrained
    configure_encoders(config, [], None, ["finetune"])
    assert {
        c.mode for c in map(lambda k: config.model.encoder_choice(k, k), config.model.encoders)
    } == {"finetune"}
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        configure_encoders(Config(), ["hf:bert-base-uncased"], None, [])
    with pytest.raises(ConfigError, match="modes are"):
        configure_encoders(Config(), ["text=./bert"], None, ["sideways"])
    with pytest.raises(ConfigError, match="unknown preset"):
        configure_encoders(Config(), [], "slow", [])


def test_fine_tuned_backbone_learns_at_a_lower_rate_and_frozen_weights_are_left_out(
    data, sources, tmp_path, monkeypatch
):
    import polymodal.model

    monkeypatch.setattr(polymodal.model, "remove_checkpoints", lambda folder: None)  # kept
    model = fit(
        data,
        ["comment", "picture"],
        {
            "text": {"source": str(sources["bert"]), "mode": "finetune", "lr_scale": 0.25},
            "image": str(sources["vit"]),
        },
        out=tmp_path / "model",
        epochs=1,
    )
    checkpoints = sorted((tmp_path / "model" / ".checkpoints").glob("*.ckpt"))
    assert [path.name for path in checkpoints] == ["best.ckpt", "last.ckpt"]
    names = {
        column: {
            f"net.encoders.{model.net_.input_names.index(column)}.backbone.{name}"
            for name in backbone_of(model, column).state_dict()
        }
        for column in ("comment", "picture")
    }
    assert len(names["picture"]) >= 20
    for path in checkpoints:
        keys = set(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
        assert keys.isdisjoint(names["picture"]), "the frozen image backbone is left out"
        assert names["comment"] <= keys, "the fine-tuned text backbone is saved"
        assert any(key.startswith("net.heads.") for key in keys)
    module = PolymodalModule(model.net_, model.config.train, LearningRateShape(1))
    optimizer = module.configure_optimizers()["optimizer"]
    lr = model.config.train.lr
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    text, image = backbone_of(model, "comment"), backbone_of(model, "picture")
    assert all(rates[id(p)] == pytest.approx(0.25 * lr) for p in text.parameters())
    assert not any(id(p) in rates for p in image.parameters())  # frozen
    assert rates[id(model.net_.heads[0].parameters().__next__())] == pytest.approx(lr)


def test_summarise_averages_equal_runs_of_real_tokens():
    hidden = torch.arange(10, dtype=torch.float32).view(1, 10, 1).repeat(2, 1, 1)
    mask = torch.tensor([[True] * 10, [True] * 4 + [False] * 6])
    summary, kept = summarise(hidden, mask, 2)
    assert summary[0, :, 0].tolist() == [2.0, 7.0]  # means of 0..4 and 5..9
    assert summary[1, :, 0].tolist() == [0.5, 2.5]  # means of 0..1 and 2..3; padding ignored
    assert kept.all()


def test_gradient_checkpointing_is_switched_on_for_a_training_backbone(data, sources):
    encoders = {
        "text": {"source": str(sources["bert"]), "mode": "finetune", "gradient_checkpointing": True}
    }
    model = fit(data, ["comment"], encoders, epochs=1)
    backbone = backbone_of(model, "comment")
    assert backbone.is_gradient_checkpointing
    equal, compared = matching(backbone, source_weights(sources["bert"]))
    assert equal < compared  # and it still trained
