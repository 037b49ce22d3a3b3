"""Modality contributions: Shapley values over inputs, by masking them as missing."""

from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from polymodal.data.table import read_table
from polymodal.explain import explain, shapley_values
from polymodal.explain.runner import Runner
from polymodal.explain.scoring import only_inputs, score, truths


def test_exact_shapley_values_of_a_known_game():
    """v = 1 for {a, b} together (a pure interaction, split evenly) + 0.3 for c alone."""

    def value(coalition):
        return np.array(float({"a", "b"} <= coalition) + 0.3 * ("c" in coalition))

    phi, exact = shapley_values(["a", "b", "c"], value)
    assert exact and np.allclose(phi, [0.5, 0.5, 0.3])


def test_sampled_shapley_values_beyond_six_inputs_are_seeded_and_efficient():
    players = [f"p{i}" for i in range(8)]
    weights = np.arange(1, 9, dtype=float)

    def value(coalition):  # additive plus one interaction between p0 and p1
        additive = sum(weights[int(p[1:])] for p in coalition)
        return np.array(additive + 4.0 * ({"p0", "p1"} <= coalition))

    phi, exact = shapley_values(players, value, permutations=64, seed=3)
    again, _ = shapley_values(players, value, permutations=64, seed=3)
    assert not exact and np.array_equal(phi, again)
    assert phi.sum() == pytest.approx(value(frozenset(players)) - value(frozenset()), abs=1e-9)
    assert np.allclose(phi[2:], weights[2:]), "additive players get exactly their weight"
    assert phi[0] + phi[1] == pytest.approx(1 + 2 + 4.0)


def blank_inputs(model, data, name: str):
    """The same table with every input cell of the model emptied (the targets kept)."""
    frame = pd.read_csv(data)
    frame[list(model.net_.input_names)] = np.nan
    path = data.parent / name
    frame.to_csv(path, index=False)
    return path


def test_exact_contributions_add_up_to_the_metric_gap(av_model, shapes):
    found = explain(av_model, shapes, rows=[0, 1, 2, 3]).contributions
    assert found.exact and found.metric == "accuracy"
    total = sum(found.metric_contributions.values())
    assert abs(total - (found.metric_all - found.metric_none)) < 1e-6
    assert found.metric_all == pytest.approx(av_model.evaluate(shapes)["label"]["accuracy"])
    # "none" is the model's own answer to rows whose every input is blank
    blank = av_model.predict(blank_inputs(av_model, shapes, "blank-av.csv"))["label_predicted"]
    truth = pd.read_csv(shapes)["label"]
    assert found.metric_none == pytest.approx(float(np.mean(blank == truth)))
    # shape × pitch: neither input alone can name the class, so both must contribute
    assert found.metric_contributions["picture"] > 0.05
    assert found.metric_contributions["sound"] > 0.05


def test_row_contributions_add_up_to_the_predicted_probability(av_model, shapes):
    rows = [0, 5, 9]
    found = explain(av_model, shapes, rows=rows).contributions
    probabilities = av_model.predict_proba(shapes).to_numpy()[rows]
    assert found.predictions == list(av_model.predict(shapes)["label_predicted"][rows])
    assert np.allclose(found.row_all, probabilities.max(axis=1), atol=1e-5)
    for row, gap in enumerate(np.subtract(found.row_all, found.row_none)):
        assert sum(found.row_contributions[row].values()) == pytest.approx(gap, abs=1e-6)
    blank = av_model.predict_proba(blank_inputs(av_model, shapes, "blank-av.csv"))
    predicted_class = probabilities.argmax(axis=1)
    expected = blank.to_numpy()[rows, predicted_class]  # that class's probability, no inputs
    assert np.allclose(found.row_none, expected, atol=1e-5)


def test_cached_encodings_with_cleared_masks_equal_marking_inputs_absent(full_model, shapes):
    """The fast path (encode once, clear masks) must be the model's own missing-input path."""
    model, _ = full_model
    features = model.encode(shapes)
    runner = Runner(model, features)
    names = model.net_.input_names
    for keep in [set(), {"picture"}, {"sound", "comment"}, set(names) - {"colour"}]:
        fast = runner.outputs(keep=keep)
        slow = model.forward(only_inputs(features, keep))
        for target in ("label", "score"):
            assert np.allclose(fast[target], slow[target], atol=1e-4)


def test_regression_contributions_use_negative_rmse(full_model, shapes):
    model, _ = full_model
    found = explain(model, shapes, rows=[0], target="score").contributions
    assert found.metric == "neg_rmse" and len(found.inputs) == 5
    assert found.metric_all == pytest.approx(-model.evaluate(shapes)["score"]["rmse"], rel=1e-5)
    total = sum(found.metric_contributions.values())
    assert abs(total - (found.metric_all - found.metric_none)) < 1e-6
    predicted = model.predict(shapes)["score_predicted"][0]
    assert found.row_all[0] == pytest.approx(predicted, rel=1e-4)
    blank = model.predict(blank_inputs(model, shapes, "blank-full.csv"))["score_predicted"]
    assert found.row_none[0] == pytest.approx(blank[0], rel=1e-4)
    rmse = np.sqrt(np.mean((blank - pd.read_csv(shapes)["score"]) ** 2))
    assert found.metric_none == pytest.approx(-rmse, rel=1e-4)


def test_a_table_without_the_target_still_explains_rows(full_model, shapes):
    model, _ = full_model
    unlabelled = read_table(shapes).frame.drop(columns=["label", "score"])
    unlabelled.to_csv(shapes.parent / "unlabelled.csv", index=False)
    explanation = explain(model, shapes.parent / "unlabelled.csv", rows=[2])
    assert explanation.contributions.metric is None
    assert len(explanation.rows) == 1 and explanation.rows[0].attributions


def test_score_matches_brute_force_masking(av_model, shapes):
    """Every coalition's metric, recomputed through `Model.forward`, gives the same values."""
    features = av_model.encode(shapes)
    truth = truths(av_model, read_table(shapes))["label"]
    found = explain(av_model, shapes, rows=[0]).contributions
    values = {}
    for size in range(3):
        for keep in combinations(["picture", "sound"], size):
            outputs = av_model.forward(only_inputs(features, set(keep)))["label"]
            values[frozenset(keep)] = score(av_model, "label", outputs, truth)
    picture = 0.5 * (values[frozenset({"picture"})] - values[frozenset()]) + 0.5 * (
        values[frozenset({"picture", "sound"})] - values[frozenset({"sound"})]
    )
    assert found.metric_contributions["picture"] == pytest.approx(picture, abs=1e-9)


def test_exact_values_match_a_brute_force_permutation_average():
    from itertools import permutations

    rng = np.random.default_rng(0)
    players = ["a", "b", "c"]
    table = {
        frozenset(p for bit, p in enumerate(players) if subset >> bit & 1): rng.normal(size=1)
        for subset in range(2 ** len(players))
    }
    exact, is_exact = shapley_values(players, lambda coalition: table[coalition])
    assert is_exact
    brute = np.zeros(len(players))
    orders = list(permutations(players))
    for order in orders:
        coalition: frozenset[str] = frozenset()
        for player in order:
            grown = coalition | {player}
            brute[players.index(player)] += table[grown][0] - table[coalition][0]
            coalition = grown
    assert np.allclose(exact[:, 0], brute / len(orders))
