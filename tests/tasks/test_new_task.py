"""A task defined here, outside `src/`, works everywhere a built-in task does: it trains,
predicts, evaluates, explains (Shapley) and serves through /v1/predict.

Count regression with a Poisson loss: the head predicts log-rate, the loss is the Poisson
negative log-likelihood, the prediction is the rate."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from torch.nn import functional as F

from polymodal.config import TargetConfig
from polymodal.data.cache import FeatureCache
from polymodal.explain import explain
from polymodal.model import Model
from polymodal.serving.app import create_app
from polymodal.serving.settings import ServeSettings
from polymodal.tasks import TargetPrediction, TargetState, Task, register_task
from polymodal.tasks.base import mean_over_known
from tests.media import tiny_config


class CountPrediction(TargetPrediction):
    predicted: float


@register_task
class PoissonCountTask(Task):
    name = "poisson_count"
    metrics: ClassVar[dict[str, bool]] = {"deviance": False, "mae": False}
    score_metric = "deviance"
    explained = "the predicted count"

    @classmethod
    def fit(cls, values: list, config: TargetConfig, table_name: str) -> TargetState:
        counts = np.asarray(values, dtype=float)
        return TargetState(column=config.column, task=cls.name, mean=float(counts.mean()))

    def encode(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        counts = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(float)
        known = np.isfinite(counts) & (counts >= 0)
        return np.where(known, counts, 0).astype(np.float32), known

    @property
    def outputs(self) -> int:
        return 1

    def loss(self, outputs, target, known):
        log_rate = outputs[:, 0] + np.log(self.state.mean)
        per_row = F.poisson_nll_loss(log_rate, target.float(), log_input=True, reduction="none")
        return mean_over_known(per_row, known)

    def decode(self, outputs):
        return {"rate": np.exp(outputs[:, 0] + np.log(self.state.mean))}

    def combine(self, decoded):
        return {"rate": np.mean([d["rate"] for d in decoded], axis=0)}

    def columns(self, decoded):
        return {f"{self.state.column}_predicted": decoded["rate"]}

    def prediction(self, decoded, row):
        return CountPrediction(predicted=float(decoded["rate"][row]))

    def evaluate(self, true, known, decoded):
        if not known.any():
            return {"rows": 0}
        y, rate = true[known], decoded["rate"][known]
        ratio = np.where(y > 0, y * np.log(np.maximum(y, 1e-9) / rate), 0.0)
        return {
            "rows": int(known.sum()),
            "deviance": float(2 * np.mean(ratio - (y - rate))),
            "mae": float(np.mean(np.abs(y - rate))),
        }

    def reference(self, decoded):
        return np.zeros(len(decoded["rate"]), dtype=np.int64), list(map(float, decoded["rate"]))

    def explained_value(self, decoded, reference):
        return decoded["rate"]

    def attribution_output(self, outputs):
        return torch.exp(outputs[:, 0])

    def attribution_index(self, reference):
        return None


def count_table(path, rows: int, seed: int) -> pd.DataFrame:
    """Counts whose rate depends on a number and on a category together."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, rows)
    group = rng.choice(["low", "high"], rows)
    rate = np.exp(0.6 + 1.0 * x + np.where(group == "high", 1.0, -0.5))
    frame = pd.DataFrame({"x": x, "group": group, "visits": rng.poisson(rate)})
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    root = tmp_path_factory.mktemp("counts")
    count_table(root / "train.csv", 600, seed=0)
    test = count_table(root / "test.csv", 200, seed=1)
    config = tiny_config(max_epochs=25, lr=3e-3)
    config.targets = [TargetConfig(column="visits", task="poisson_count")]
    model = Model(config=config, cache=FeatureCache(root / "cache"))
    model.fit(root / "train.csv", out=root / "model")
    return root, model, test


def test_trains_predicts_and_evaluates(counts):
    root, model, test = counts
    predicted = model.predict(root / "test.csv")["visits_predicted"].to_numpy()
    assert (predicted > 0).all()
    metrics = model.evaluate(root / "test.csv")["visits"]
    assert metrics["rows"] == len(test)
    # a constant prediction of the mean count is the baseline the model must beat
    constant = Model.load(root / "model").task("visits")
    baseline = constant.evaluate(
        test["visits"].to_numpy(float),
        np.ones(len(test), dtype=bool),
        {"rate": np.full(len(test), test["visits"].mean())},
    )
    assert metrics["deviance"] < 0.7 * baseline["deviance"]
    assert np.mean(np.abs(predicted - test["visits"])) == pytest.approx(metrics["mae"])
    assert model.metrics_["test" if "test" in model.metrics_ else "valid"]["visits"]["rows"] > 0


def test_loads_and_explains(counts):
    root, model, _ = counts
    loaded = Model.load(root / "model")
    pd.testing.assert_frame_equal(
        loaded.predict(root / "test.csv"), model.predict(root / "test.csv")
    )
    explanation = explain(loaded, root / "test.csv", rows=[0, 1, 2], attributions=False)
    found = explanation.contributions
    assert set(found.inputs) == {"x", "group"}
    assert found.metric == "neg_deviance"
    metric_total = sum(found.metric_contributions.values())
    assert metric_total == pytest.approx(found.metric_all - found.metric_none, abs=1e-6)
    assert found.metric_all > found.metric_none  # the inputs make the counts better predicted
    predicted = loaded.predict(root / "test.csv")["visits_predicted"]
    for index, row in enumerate(explanation.rows):
        assert row.value == pytest.approx(float(predicted[row.row]), rel=1e-5)
        total = sum(row.contributions.values())
        assert total == pytest.approx(found.row_all[index] - found.row_none[index], abs=1e-5)
        assert found.row_none[index] > 0  # with every input masked it is still a rate


def test_serves_through_predict(counts):
    root, model, test = counts
    client = TestClient(create_app(ServeSettings(model_dir=root / "model")))
    with client:
        rows = [
            {"x": float(x), "group": g}
            for x, g in zip(test["x"][:4], test["group"][:4], strict=True)
        ]
        response = client.post("/v1/predict", json={"rows": rows})
        schema = client.get("/v1/schema").json()
    assert response.status_code == 200, response.text
    served = [entry["visits"]["predicted"] for entry in response.json()["predictions"]]
    expected = model.predict(root / "test.csv")["visits_predicted"][:4]
    assert served == pytest.approx(list(expected), rel=1e-5)
    assert schema["targets"][0]["task"] == "poisson_count"
