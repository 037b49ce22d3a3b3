"""The image target: flow-matching generation conditioned on the other inputs. Fitting and
encoding, the loss falling on a fixed batch, guidance 0 as the unconditional path, seeded and
batch-independent sampling, save/load, provenance marks, and `polymodal generate`/`inspect`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from PIL import Image
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.config import TargetConfig
from polymodal.data.problems import BadInputError
from polymodal.data.table import Table
from polymodal.fusion import Fused
from polymodal.model import Model
from polymodal.tasks import fit_target, generated_counts, task_for
from polymodal.tasks.image.provenance import read_mark
from polymodal.training.fit import weight_averaging
from tests.media import SAMPLING, bar_table, image_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("image_target")
    data = bar_table(root)
    model = Model(config=image_config()).fit(str(data), out=root / "model")
    return root, data, model


def samples(model: Model, features: dict, first_row: int = 0, **decoding) -> np.ndarray:
    model.set_decoding(**decoding)
    return model.forward(features, first_row=first_row)["image"]


def test_fit_encode_and_inference(tmp_path):
    data = bar_table(tmp_path, rows=6)
    frame = pd.read_csv(data)
    state = fit_target(frame, TargetConfig(column="image"), "t.csv", tmp_path)
    assert state.task == "image"  # a column of image files is inferred as an image target
    task = task_for(state)
    assert (task.image.size, task.image.channels) == (16, 1)
    cells = [str(tmp_path / p) for p in frame["image"]] + [None, str(tmp_path / "gone.png")]
    values, known = task.encode(cells)
    assert values.shape == (8, 1, 16, 16) and known.tolist() == [True] * 6 + [False, False]
    assert values.min() >= -1 and values.max() <= 1 and values[:6].max() == 1


def test_flow_loss_falls_on_a_fixed_batch(tmp_path):
    data = bar_table(tmp_path, rows=8)
    state = fit_target(pd.read_csv(data), TargetConfig(column="image", task="image",
                       options=SAMPLING), "t.csv", tmp_path)  # fmt: skip
    task = task_for(state)
    torch.manual_seed(0)
    head = task.head(16, 1, 0.0)
    values, known = task.encode([str(p) for p in sorted((tmp_path / "img").glob("*.png"))])
    target, known = torch.from_numpy(values), torch.from_numpy(known)
    memory = torch.randn(8, 3, 16)
    fused = Fused(memory[:, :1], torch.ones(8, 1), memory, torch.ones(8, 3, dtype=torch.bool))

    def fixed_loss() -> float:
        head.eval()  # fixed noise and times
        with torch.no_grad():
            return float(task.loss(head(fused, target), target, known))

    before = fixed_loss()
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    head.train()
    for _ in range(40):
        optimiser.zero_grad()
        task.loss(head(fused, target), target, known).backward()
        optimiser.step()
    assert fixed_loss() < 0.7 * before


def test_validation_score_is_minus_the_validation_flow_loss(trained):
    history = trained[2].metrics_["history"]
    assert history[-1]["val_score"] == pytest.approx(-history[-1]["val_loss"], rel=1e-4)


def test_guidance_zero_is_the_unconditional_path(trained):
    _, data, model = trained
    features = model.encode(str(data))
    unconditional = samples(model, features, guidance=0.0, seed=1)
    missing = {name: {**item, "present": torch.zeros_like(item["present"])}
               for name, item in features.items()}  # fmt: skip
    assert np.array_equal(samples(model, missing, guidance=3.0, seed=1), unconditional)
    assert not np.array_equal(samples(model, features, guidance=3.0, seed=1), unconditional)


def test_seeded_sampling_repeats_and_ignores_batching(trained):
    _, data, model = trained
    features = model.encode(str(data))
    first = samples(model, features, guidance=2.0, seed=7)
    assert np.array_equal(samples(model, features, seed=7), first)
    assert not np.array_equal(samples(model, features, seed=8), first)
    part = {
        name: {key: value[4:9] for key, value in item.items()} for name, item in features.items()
    }
    # the same noise a row; another batch size may round the network's sums differently
    assert np.allclose(samples(model, part, first_row=4, seed=7), first[4:9], atol=1e-5)


def test_save_load_round_trip_gives_identical_samples(trained):
    root, data, model = trained
    loaded = Model.load(root / "model")
    features = model.encode(str(data))
    assert np.array_equal(
        samples(loaded, features, seed=2, guidance=1.5),
        samples(model, features, seed=2, guidance=1.5),
    )


def test_predict_writes_marked_pngs_and_never_overwrites(trained, tmp_path):
    root, data, _ = trained
    model = Model.load(root / "model").set_decoding(image_dir=str(tmp_path / "out"), seed=5)
    paths = model.predict(str(data))["image_predicted"].tolist()
    assert len(paths) == 36 and all((tmp_path / "out" / f"image-{r:06d}.png").is_file()
                                    for r in range(36))  # fmt: skip
    mark = read_mark(paths[3])
    assert mark["generated"] and mark["model"] == "model" and len(mark["weights_sha256"]) == 16
    assert (mark["row"], mark["seed"], mark["steps"], mark["guidance"]) == (3, 5, 3, 2.0)
    again = model.predict(str(data))["image_predicted"].tolist()
    assert again[0].endswith("image-000000-2.png") and np.array_equal(
        np.asarray(Image.open(again[0])), np.asarray(Image.open(paths[0]))
    )
    listing = pd.DataFrame({"image": paths + [str(data.parent / "img/0.png")]})
    assert generated_counts(Table(listing, tmp_path, "listing")) == {"image": {"image": 36}}
    with pytest.raises(BadInputError, match="image_dir"):
        Model.load(root / "model").predict(str(data))


def test_bad_sampling_settings_are_clear_errors(trained):
    model = trained[2]
    with pytest.raises(BadInputError, match="steps"):
        model.set_decoding(steps=0)
    with pytest.raises(BadInputError, match="guidance"):
        model.set_decoding(guidance=-1.0)
    with pytest.raises(BadInputError, match="only generated targets"):
        model.set_decoding(beam=2)


def test_cli_generate_inspect_and_predict(trained, tmp_path):
    root, data, _ = trained
    conditions = tmp_path / "conditions.csv"
    pd.DataFrame({"label": ["shape0", "shape2", "shape1"]}).to_csv(conditions, index=False)
    runner = CliRunner()
    out = tmp_path / "gen"
    args = ["generate", str(root / "model"), str(conditions), "--out", str(out)]
    result = runner.invoke(app, [*args, "-n", "2", "--steps", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "generated.csv")
    assert set(table.columns) == set(pd.read_csv(data).columns) and len(table) == 6
    assert table["label"].tolist() == ["shape0", "shape0", "shape2", "shape2", "shape1", "shape1"]
    assert len(list((out / "images").glob("*.png"))) == 6
    assert all((out / path).is_file() for path in table["image"])
    result = runner.invoke(app, ["inspect", str(out / "generated.csv")])
    assert result.exit_code == 0 and "6 of 6 rows point at generated image files" in result.output
    predicted = tmp_path / "pred" / "p.csv"
    predicted.parent.mkdir()
    result = runner.invoke(app, ["predict", str(root / "model"), str(conditions), "-o",
                                 str(predicted), "--steps", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    paths = pd.read_csv(predicted)["image_predicted"]
    assert all((predicted.parent / path).is_file() for path in paths)
    assert paths[0].startswith("p_images/")
    for bad in (["--steps", "0"], ["--guidance", "-1"]):
        result = runner.invoke(app, [*args[:-1], str(tmp_path / "bad"), *bad])
        assert result.exit_code == 2 and result.output.strip().count("\n") == 0, result.output
        assert "error:" in result.output and bad[0][2:] in result.output


def test_training_keeps_a_moving_average_of_the_weights(trained, tmp_path):
    """The image task asks for Lightning's moving average of the weights (`ema`), so the
    weights validated and saved are the averaged ones; `ema: 0` trains without it."""
    _, data, model = trained
    (averaging,) = weight_averaging(model.net_)
    assert isinstance(averaging, EMAWeightAveraging)
    plain = Model(config=image_config(ema=0.0)).fit(str(data), out=tmp_path / "plain")
    assert weight_averaging(plain.net_) == []
    averaged, raw = model.net_.state_dict(), plain.net_.state_dict()
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[key], raw[key]) for key in raw)
