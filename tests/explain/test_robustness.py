"""Robustness: inputs removed, noise sweeps, adversarial attacks; per-group metrics."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.data.table import read_table
from polymodal.explain import group_metrics, robustness
from polymodal.explain.noise import noisy_spectrograms, waveforms
from polymodal.modalities.text.noise import drop_words, typos


def curves_by_name(result):
    return {(c["input"], c["perturbation"]): c for c in result["curves"]}


def test_removal_noise_and_attacks_lower_the_metric(image_model, square_data):
    result = robustness(image_model, square_data)["targets"]["label"]
    clean = result["clean"]
    assert result["metric"] == "accuracy" and clean >= 0.9
    assert result["removed"]["picture"] <= 0.6, "without its only input the model guesses"
    curves = curves_by_name(result)
    for key in [("picture", "gaussian noise"), ("picture", "blur"), ("picture", "PGD")]:
        scores = curves[key]["scores"]
        assert len(scores) == len(curves[key]["levels"])
        assert scores[-1] <= clean - 0.25, f"{key}: strongest {scores[-1]} vs clean {clean}"
        # the mildest level is the closest to clean; how close depends on the model: this one,
        # fitted on 77 pictures of a small square, loses 8 to 15 points at a blur of σ 0.5 px
        # (over seeds and schedules), and 0 to 1 at noise σ 0.05
        assert scores[-1] <= scores[0] and scores[0] >= clean - 0.2, f"{key}: {scores}"
    fgsm, pgd = curves[("picture", "FGSM")]["scores"], curves[("picture", "PGD")]["scores"]
    assert pgd[-1] <= fgsm[-1], "the iterated attack is at least as strong as one step"


def test_audio_noise_is_added_to_the_waveform_and_lowers_the_metric(av_model, shapes):
    result = robustness(av_model, shapes, adversarial=False)["targets"]["label"]
    noise = curves_by_name(result)[("sound", "white noise")]
    assert noise["unit"] == "SNR (dB)" and noise["levels"] == [20, 10, 5, 0, -5, -10]
    # a pure tone stays visible in a spectrogram at −10 dB of broadband noise, so the drop
    # is smaller than the picture's; it is still clear on this model
    assert noise["scores"][-1] <= result["clean"] - 0.15
    # the strongest noise harms at least as much as the mildest; where the mildest already
    # takes this tiny model down to its floor, both scores sit at chance, a row or two apart
    floor = 2 / len(read_table(shapes))
    assert noise["scores"][-1] <= noise["scores"][0] + floor, noise["scores"]
    assert result["removed"]["sound"] < result["clean"]
    assert result["removed"]["picture"] < result["clean"]


def test_re_featurised_clean_audio_matches_the_model_features(av_model, shapes):
    """With negligible noise, the sweep's own log-mel path reproduces `encode_audio`."""
    table = read_table(shapes)
    waves = waveforms(av_model, table, "sound")
    quiet = noisy_spectrograms(av_model, "sound", waves, 200.0, np.random.default_rng(0))
    features = av_model.encode(table)["sound"]
    assert np.array_equal(quiet["lengths"].numpy(), features["lengths"].numpy())
    assert np.allclose(quiet["values"].numpy(), features["values"].float().numpy(), atol=0.02)


def test_text_perturbations():
    rng = np.random.default_rng(0)
    text = "the quick brown fox jumps over the lazy dog " * 20
    assert drop_words(text, 1.0, rng) == "" and drop_words(text, 0.0, rng) == text.strip()
    kept = len(drop_words(text, 0.5, rng).split()) / len(text.split())
    assert 0.35 < kept < 0.65
    changed = typos(text, 0.2, rng)
    assert len(changed) == len(text)
    letters = [a != b for a, b in zip(text, changed, strict=True) if a.isalpha()]
    assert 0.1 < np.mean(letters) < 0.3
    assert drop_words(None, 0.5, rng) is None and typos(None, 0.5, rng) is None


def test_every_kind_has_its_sweep_and_regression_scores(full_model, shapes):
    model, _ = full_model
    result = robustness(model, shapes, attack_rows=16)
    assert result["rows"] == 96 and set(result["targets"]) == {"label", "score"}
    label = curves_by_name(result["targets"]["label"])
    expected = {
        ("picture", "gaussian noise"), ("picture", "blur"), ("sound", "white noise"),
        ("comment", "word dropout"), ("comment", "typos"), ("size", "gaussian jitter"),
        ("colour", "random swap"), ("picture", "FGSM"), ("picture", "PGD"), ("sound", "FGSM"),
        ("sound", "PGD"), ("size", "FGSM"), ("size", "PGD"),
    }  # fmt: skip
    assert set(label) == expected, "text and categories are not attacked with gradients"
    for curve in label.values():
        assert all(0.0 <= s <= 1.0 for s in curve["scores"])
    score = result["targets"]["score"]
    assert score["metric"] == "neg_rmse" and score["clean"] < 0
    assert score["clean"] == pytest.approx(-model.evaluate(shapes)["score"]["rmse"], rel=1e-5)
    attacks = [c for c in score["curves"] if c["perturbation"] == "PGD"]
    assert all(c["rows"] == 16 for c in attacks), "attacks run on a sample of rows"
    assert min(min(c["scores"]) for c in attacks) < attacks[0]["clean"], "attacks raise the error"


def test_group_metrics_sizes_and_gap(full_model, shapes):
    model, _ = full_model
    frame = read_table(shapes).frame.copy()
    frame.loc[:3, "colour"] = None
    frame.to_csv(shapes.parent / "grouped.csv", index=False)
    found = group_metrics(model, shapes.parent / "grouped.csv", "colour")["label"]
    groups = {g["group"]: g for g in found["groups"]}
    assert set(groups) == {"(missing)", "blue", "green", "red"}
    assert sum(g["rows"] for g in groups.values()) == 96 and groups["(missing)"]["rows"] == 4
    scores = [g["score"] for g in groups.values()]
    assert found["gap"]["value"] == pytest.approx(max(scores) - min(scores))
    assert groups[found["gap"]["worst"]]["score"] == min(scores)
    binned = group_metrics(model, shapes, "size")["label"]["groups"]
    assert len(binned) == 4 and sum(g["rows"] for g in binned) == 96, "numbers: quartile bins"


def test_evaluate_command_with_robustness_and_groups(full_model, shapes, tmp_path):
    _, folder = full_model
    out = tmp_path / "eval.json"
    args = ["evaluate", str(folder), str(shapes), "--robustness", "--no-adversarial"]
    result = CliRunner().invoke(app, [*args, "--group-by", "colour", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "with one input removed" in result.output and "largest gap" in result.output
    report = json.loads(out.read_text())
    label = report["label"]
    assert label["rows"] == 96 and set(label["robustness"]["removed"]) == {
        "picture", "sound", "comment", "size", "colour",
    }  # fmt: skip
    assert not any(c["perturbation"] == "PGD" for c in label["robustness"]["curves"])
    assert sum(g["rows"] for g in label["groups"]["colour"]["groups"]) == 96
    assert report["score"]["robustness"]["metric"] == "neg_rmse"
    missing = CliRunner().invoke(app, ["evaluate", str(folder), str(shapes), "--group-by", "nope"])
    assert missing.exit_code == 2 and "no group-by column 'nope'" in missing.output


def test_tables_over_1000_rows_are_sampled(tmp_path, cache):
    """README: tables larger than 1000 rows are sampled (seeded); attacks run on a seeded
    sample of at most 128 rows, each attack curve with its row count and clean score."""
    from polymodal import Model
    from polymodal.data.table import Table
    from polymodal.explain.robustness import sample
    from polymodal.explain.scoring import score, truths
    from tests.media import tiny_config

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"reading": rng.normal(size=1200), "site": rng.choice(list("abc"), 1200)})
    frame["label"] = np.where(frame["reading"] + rng.normal(0, 0.5, 1200) > 0, "up", "down")
    frame.to_csv(tmp_path / "big.csv", index=False)
    model = Model(target="label", config=tiny_config(max_epochs=1), cache=cache)
    model.fit(tmp_path / "big.csv")
    result = robustness(model, tmp_path / "big.csv")
    assert result["rows"] == 1000
    kept = sample(1200, 1000, 0)
    assert len(set(kept)) == 1000 and kept.max() < 1200
    table = Table(frame.iloc[kept].reset_index(drop=True), tmp_path)
    truth = truths(model, table)["label"]
    clean = score(model, "label", model.raw_outputs(table)["label"], truth)
    assert result["targets"]["label"]["clean"] == pytest.approx(clean)  # the seeded sample's
    attacked = table.subset(sample(1000, 128, 0))  # a seeded sample of the sample
    truth = truths(model, attacked)["label"]
    clean = score(model, "label", model.raw_outputs(attacked)["label"], truth)
    attacks = [c for c in result["targets"]["label"]["curves"] if c["perturbation"] == "PGD"]
    assert attacks and all(c["rows"] == 128 for c in attacks)
    assert all(c["clean"] == pytest.approx(clean) for c in attacks)
    again = robustness(model, tmp_path / "big.csv")
    assert again == result, "the same sample every time"
