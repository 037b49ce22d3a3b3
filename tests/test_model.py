"""Model: fit / predict / predict_proba / evaluate / save / load, multi-target, round trips."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from polymodal import Model
from polymodal.config import TargetConfig
from polymodal.data.cache import FeatureCache
from polymodal.data.problems import BadInputError
from polymodal.data.table import Table
from polymodal.training.module import PolymodalModule
from tests.media import shapes_and_tones, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_and_tones(tmp_path_factory.mktemp("shapes"), rows=40)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Module fixtures outlive each test's own cache (tests/conftest.py): pass one explicitly."""
    return FeatureCache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def fitted(data, cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    return Model(target="label", config=tiny_config(), cache=cache).fit(data, out=out), out


def test_fit_writes_a_pickle_free_model_folder(fitted):
    model, out = fitted
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    config = json.loads((out / "config.json").read_text())
    kinds = {state["column"]: state["kind"] for state in config["schema"]["inputs"]}
    assert kinds == {
        "picture": "image", "sound": "audio", "comment": "text",
        "size": "number", "colour": "category", "score": "number",
    }  # fmt: skip
    assert "tokenizer" in next(s for s in config["schema"]["inputs"] if s["kind"] == "text")
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and "val_score" in metrics["history"][0]
    assert metrics["valid"]["label"]["rows"] == 4


def test_predict_and_proba(fitted, data):
    model, _ = fitted
    predictions = model.predict(data)
    assert len(predictions) == 40
    classes = ["circle-high", "circle-low", "square-high", "square-low"]
    assert set(predictions["label_predicted"]) <= set(classes)
    probabilities = model.predict_proba(data)
    assert list(probabilities.columns) == classes
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(predictions[[f"label_prob_{c}" for c in classes]].to_numpy(), probabilities)


def test_training_and_prediction_keep_freed_memory_for_the_next_batch(data, tmp_path, monkeypatch):
    """`machine.reuse_freed_memory` (tests/test_machine.py measures what it does) is asked for
    by training and by every prediction."""
    import polymodal.model
    import polymodal.training.fit

    calls = []
    for module in (polymodal.model, polymodal.training.fit):
        monkeypatch.setattr(
            module, "reuse_freed_memory", lambda module=module: calls.append(module)
        )
    model = Model(
        target="label", config=tiny_config(max_epochs=1), cache=FeatureCache(enabled=False)
    )
    model.fit(data, out=tmp_path / "m")
    assert polymodal.training.fit in calls
    calls.clear()
    model.predict(data)
    assert calls == [polymodal.model]


def test_evaluate_reports_classification_metrics(fitted, data):
    """evaluate's numbers, recomputed by hand from predict() and the labels, on rows whose
    classes are unevenly represented (so weighted and macro F1 differ)."""
    model = fitted[0]
    frame = pd.read_csv(data).iloc[:27]
    table = Table(frame, data.parent)
    report = model.evaluate(table)["label"]
    truth = frame["label"].to_numpy()
    predicted = model.predict(table)["label_predicted"].to_numpy()
    classes = report["classes"]
    assert report["rows"] == 27 and classes == sorted(set(truth))
    assert report["accuracy"] == pytest.approx(np.mean(predicted == truth))
    confusion = [[int(np.sum((truth == t) & (predicted == p))) for p in classes] for t in classes]
    assert report["confusion_matrix"] == confusion
    weighted = 0.0
    for index, name in enumerate(classes):
        hits, support = confusion[index][index], np.sum(truth == name)
        guessed = np.sum(predicted == name)
        f1 = 2 * hits / (support + guessed) if support + guessed else 0.0
        weighted += f1 * support / len(truth)
    assert report["weighted_f1"] == pytest.approx(weighted)


def test_load_in_a_fresh_process_predicts_identically(fitted, data, tmp_path):
    model, out = fitted
    expected = model.predict(data)
    script = (
        "import sys; from polymodal import Model;"
        "Model.load(sys.argv[1]).predict(sys.argv[2]).to_csv(sys.argv[3], index=False)"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(out), str(data), str(tmp_path / "p.csv")], check=True
    )
    loaded = pd.read_csv(tmp_path / "p.csv")
    assert (loaded["label_predicted"] == expected["label_predicted"]).all()
    probability_columns = [c for c in expected.columns if "_prob_" in c]
    assert (
        np.abs(
            loaded[probability_columns].to_numpy() - expected[probability_columns].to_numpy()
        ).max()
        < 1e-6
    )


def test_several_targets_with_weights(data, tmp_path, monkeypatch):
    """The loss that trains is L_label + 0.5 × L_score, each head's own loss on the batch."""
    steps = []
    combined_loss = PolymodalModule.combined_loss

    def recorded(self, outputs, targets):
        loss = combined_loss(self, outputs, targets)
        if self.net.training and not steps:
            steps.append((self.net, {k: v.detach() for k, v in outputs.items()}, targets, loss))
        return loss

    monkeypatch.setattr(PolymodalModule, "combined_loss", recorded)
    config = tiny_config()
    config.targets = [
        TargetConfig(column="label", weight=1.0),
        TargetConfig(column="score", weight=0.5),
    ]
    config.inputs = ["picture", "sound"]
    model = Model(config=config).fit(data, out=tmp_path / "multi")
    net, outputs, targets, loss = steps[0]
    losses = {
        name: task.loss(outputs[name].float(), *targets[name])
        for name, task in zip(net.target_names, net.tasks, strict=True)
    }
    assert set(losses) == {"label", "score"} and float(losses["score"]) > 0.01
    expected = losses["label"] + 0.5 * losses["score"]
    assert float(loss) == pytest.approx(float(expected), rel=1e-3)
    tasks = {t.column: t.task for t in model.schema_.targets}
    assert tasks == {"label": "multiclass", "score": "regression"}
    report = model.evaluate(data)
    assert {"accuracy", "weighted_f1"} <= set(report["label"]) and {"rmse", "mae", "r2"} <= set(
        report["score"]
    )
    assert "score_predicted" in model.predict(data).columns


@pytest.fixture(scope="module")
def two_modality(tmp_path_factory):
    """Training rows and held-out rows (other pictures and sounds) whose label is shape × pitch.

    384 rows, because with 96 the CNN memorised the training pictures (0.95 on them) without
    learning circle from square (0.55 on new ones); 16-pixel images learn the shape fastest."""
    root = tmp_path_factory.mktemp("two-modality")
    return shapes_and_tones(root / "train", rows=384), shapes_and_tones(root / "new", 96, seed=1)


@pytest.fixture
def one_torch_thread():
    """Small models on two shared cores: torch's pool spin-waits against other work and one
    thread is several times faster (as in tests/explain/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def held_out_accuracy(two_modality, cache, inputs, fusion="concat") -> float:
    """Accuracy on rows the model never saw, so memorising the training rows cannot pass. No
    early stopping or modality dropout here: with a few validation rows they made the test
    depend on the machine's rounding (CI stopped attention at epoch 6)."""
    train, new = two_modality
    config = tiny_config(max_epochs=10, lr=3e-3, patience=10, modality_dropout=0.0)
    config.inputs = inputs
    config.preprocess.image.size = 16
    model = Model(target="label", fusion=fusion, config=config, cache=cache).fit(train)
    predicted = model.predict(new)["label_predicted"].to_numpy()
    return float(np.mean(predicted == pd.read_csv(new)["label"].to_numpy()))


@pytest.mark.parametrize("fusion", ["concat", "late", "attention"])
@pytest.mark.usefixtures("one_torch_thread")
def test_every_fusion_learns_the_two_modality_label(two_modality, cache, fusion):
    """Shape × pitch needs both modalities (one alone caps accuracy at 0.5, next test), so
    every fusion must use both to pass."""
    assert held_out_accuracy(two_modality, cache, ["picture", "sound"], fusion) >= 0.85


@pytest.mark.parametrize("single", ["picture", "sound"])
@pytest.mark.usefixtures("one_torch_thread")
def test_one_modality_alone_cannot_learn_the_label(two_modality, cache, single):
    """The same training with one input: on new rows it stays near 0.5, so the test above
    can pass only by using both inputs."""
    assert held_out_accuracy(two_modality, cache, [single]) <= 0.6


def test_multilabel_and_binary_targets(tmp_path):
    data = shapes_and_tones(tmp_path, rows=32)
    frame = pd.read_csv(data)
    frame["tags"] = ["round|loud" if i % 2 == 0 else "edgy" for i in range(len(frame))]
    frame["is_circle"] = ["yes" if label.startswith("circle") else "no" for label in frame["label"]]
    frame.drop(columns=["label", "score"]).to_csv(data, index=False)
    config = tiny_config()
    config.targets = [
        TargetConfig(column="tags", task="multilabel"),
        TargetConfig(column="is_circle"),
    ]
    model = Model(config=config).fit(data)
    assert [t.task for t in model.schema_.targets] == ["multilabel", "binary"]
    predictions = model.predict(data)
    assert {"tags_prob_round", "tags_prob_edgy", "is_circle_prob_yes"} <= set(predictions.columns)
    assert "micro_f1" in model.evaluate(data)["tags"]


def test_clear_errors_before_training(data, tmp_path):
    with pytest.raises(BadInputError, match="no target column 'nope'"):
        Model(target="nope", config=tiny_config()).fit(data)
    frame = pd.read_csv(data).assign(constant="same")
    frame.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(BadInputError, match="one class"):
        Model(target="constant", config=tiny_config()).fit(tmp_path / "one.csv")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(BadInputError, match="--overwrite"):
        Model(target="label", config=tiny_config()).fit(data, out=tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
