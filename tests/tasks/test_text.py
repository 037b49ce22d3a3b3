"""The text task: its tokenizer, inference, loss, decoding and scoring, and whole models with a
text target (train -> predict -> evaluate, save/load, decoding settings)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from polymodal import Model
from polymodal.config import AudioSettings, Config, TargetConfig
from polymodal.data.cache import FeatureCache
from polymodal.data.features import encode_inputs, fit_schema
from polymodal.data.problems import BadInputError, ProblemLog
from polymodal.data.table import read_table
from polymodal.fusion import Fused
from polymodal.network import MultimodalNet
from polymodal.tasks import TargetPrediction, fit_target, task_for
from polymodal.tasks.text.head import TeacherForced
from polymodal.tasks.text.metrics import word_error_rate
from polymodal.tasks.text.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    texts_of,
    token_ids,
    train_target_tokenizer,
)
from polymodal.training.batches import to_tensors
from tests.media import TONE_WORDS, write_tones

WORDS = "zero one two three four five six seven eight nine".split()
SENTENCES = [f"a {c} {s} left of a {d}" for c in ("red", "blue") for s in WORDS[:5] for d in WORDS]


def text_state(cells=SENTENCES, **options):
    config = TargetConfig(column="y", task="text", options=options)
    return fit_target(pd.DataFrame({"y": pd.Series(cells, dtype=object)}), config, "t.csv")


@pytest.mark.parametrize("kind", ["wordpiece", "char"])
def test_tokenizer_round_trip(kind):
    texts = ["Seven three one", "a red circle, left of a blue seven.", "zero  zero nine"]
    tokenizer = train_target_tokenizer(texts, kind, 500, lowercase=True)
    ids = token_ids(tokenizer, texts, 40)
    assert (ids[:, 0] == BOS_ID).all()
    assert [int((row == EOS_ID).sum()) for row in ids] == [1, 1, 1]
    assert texts_of(tokenizer, ids) == [
        "seven three one",
        "a red circle, left of a blue seven.",
        "zero zero nine",
    ]
    again = train_target_tokenizer(texts, kind, 500, lowercase=True)
    assert again.get_vocab() == tokenizer.get_vocab()  # numbered in a fixed order


def test_characters_spell_unseen_words_and_show_unknown_ones():
    tokenizer = train_target_tokenizer(["seven one", "one seven"], "char", 100, lowercase=True)
    ids = token_ids(tokenizer, ["neon seven", "xylophone"], 20)
    assert texts_of(tokenizer, ids) == ["neon seven", "[UNK][UNK][UNK]o[UNK][UNK]one"]


def test_truncation_keeps_the_end_token():
    tokenizer = train_target_tokenizer(SENTENCES, "wordpiece", 500, lowercase=True)
    ids = token_ids(tokenizer, [SENTENCES[0]], 3)
    assert ids.shape == (1, 5) and ids[0, -1] == EOS_ID
    assert texts_of(tokenizer, ids) == [" ".join(SENTENCES[0].split()[:3])]


def test_nearly_unique_strings_become_text_and_are_refused_as_classes():
    assert text_state().task == "text"
    config = TargetConfig(column="y", task="text")
    assert (
        fit_target(pd.DataFrame({"y": pd.Series(SENTENCES[:5])}), config, "t.csv").task == "text"
    )  # as asked
    labels = pd.Series(["cat", "dog"] * 30)
    assert (
        fit_target(pd.DataFrame({"y": labels}), TargetConfig(column="y"), "t.csv").task == "binary"
    )
    numbers = pd.Series([float(i) / 7 for i in range(50)])
    assert (
        fit_target(pd.DataFrame({"y": numbers}), TargetConfig(column="y"), "t.csv").task
        == "regression"
    )
    with pytest.raises(BadInputError, match=r"100 distinct values in 100 rows.*task: text"):
        fit_target(
            pd.DataFrame({"y": pd.Series(SENTENCES)}),
            TargetConfig(column="y", task="multiclass"),
            "t.csv",
        )


def test_bad_options_are_one_line_errors():
    with pytest.raises(BadInputError, match="tokenizer"):
        text_state(tokenizer="bytes")
    with pytest.raises(BadInputError, match="nbest"):
        text_state(beam=2, nbest=3)


def memory(rows=4, tokens=3, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mem = torch.randn(rows, tokens, dim, generator=generator)
    mask = torch.ones(rows, tokens, dtype=torch.bool)
    return Fused(mem[:, :1], torch.ones(rows, 1), mem, mask)


def test_teacher_forced_loss_is_the_mean_over_real_tokens_of_each_tokens_loss():
    task = task_for(text_state(label_smoothing=0.0, layers=1, heads=2, ctc_weight=0.0))
    torch.manual_seed(0)
    head = task.head(16, 1, 0.0).eval()
    values, known = task.encode(SENTENCES[:3] + ["a blue two"])
    target = torch.from_numpy(values)
    known = torch.from_numpy(known)
    fused = memory()
    logits = head(fused, target)
    loss = task.loss(logits, target, known)
    # the same sum, token by token, from the decoder's own cached steps over the memory
    decoder, memory_read = head.decoder, head.in_context(fused).memory
    total, count = 0.0, 0
    for row in range(4):
        cache = decoder.start(memory_read[row : row + 1], fused.memory_mask[row : row + 1])
        for position in range(target.shape[1] - 1):
            if target[row, position + 1] == PAD_ID:
                break
            step, cache = decoder.step(target[row, position : position + 1], cache)
            total -= float(F.log_softmax(step.detach().float(), -1)[0, target[row, position + 1]])
            count += 1
    assert float(loss.detach()) * count == pytest.approx(total, rel=1e-5)
    unknown_last = known.clone()
    unknown_last[-1] = False
    changed = target.clone()
    changed[-1, 1:3] = changed[0, 1:3].flip(0)
    assert torch.allclose(
        task.loss(logits, target, unknown_last),
        task.loss(head(fused, changed), changed, unknown_last),
    )
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())


def test_ctc_loss_reads_each_timed_input_and_skips_rows_without_it():
    """The CTC term: per target token, over each timed span's real tokens, mean over spans;
    a row whose input is missing is left out of that span's term, and the total loss is the
    decoder's plus `ctc_weight` × it."""
    task = task_for(text_state(layers=1, heads=2, ctc_weight=0.5))
    torch.manual_seed(0)
    head = task.head(16, 1, 0.0).eval()
    values, known = task.encode(SENTENCES[:4])
    target, known = torch.from_numpy(values), torch.from_numpy(known)
    spans = ((1, 25), (25, 45))
    fused = memory(tokens=45)._replace(timed=spans)
    mask = fused.memory_mask.clone()
    mask[1, 20:25] = False  # a shorter first clip
    mask[3, 25:] = False  # the second input missing
    fused = fused._replace(memory_mask=mask)
    out = head(fused, target)
    assert isinstance(out, TeacherForced)
    special = {PAD_ID, BOS_ID, EOS_ID}
    words = [[int(t) for t in row[1:] if int(t) not in special] for row in values]

    memory_read = head.in_context(fused).memory

    def span_loss(start, rows):
        total, count = 0.0, 0
        for row in rows:
            steps = int(mask[row, start:].sum()) if start == 25 else int(mask[row, 1:25].sum())
            scores = head.ctc(memory_read[row : row + 1, start : start + steps])
            total += F.ctc_loss(
                scores.log_softmax(-1).transpose(0, 1), torch.tensor([words[row]]),
                [steps], [len(words[row])], blank=PAD_ID, reduction="sum",
            )  # fmt: skip
            count += len(words[row])
        return total / count

    expected = (span_loss(1, range(4)) + span_loss(25, range(3))) / 2
    assert float(out.ctc) == pytest.approx(float(expected), rel=1e-5)
    changed = fused.memory.clone()
    changed[3, 25:] += 5.0  # the missing input's tokens are not read
    assert torch.allclose(head(fused._replace(memory=changed), target).ctc, out.ctc)
    combined = task.loss(out, target, known)
    assert torch.allclose(combined, task.loss(out.logits, target, known) + 0.5 * out.ctc)
    combined.backward()
    assert all(p.grad is not None for p in head.parameters())
    assert not isinstance(head(fused._replace(timed=()), target), TeacherForced)


@pytest.mark.parametrize("memory_layers", [0, 2])
def test_masked_memory_changes_no_output_through_the_memory_encoder(memory_layers):
    """The memory encoder lets tokens read each other, but never a masked one: a missing
    input's tokens change neither logits nor generated texts; a real token changes its row."""
    task = task_for(text_state(layers=1, heads=2, memory_layers=memory_layers))
    torch.manual_seed(0)
    head = task.head(16, 1, 0.0).eval()
    assert (head.memory_encoder is None) == (memory_layers == 0)
    target = torch.from_numpy(task.encode(SENTENCES[:4])[0])
    fused = memory(tokens=12)
    mask = fused.memory_mask.clone()
    mask[1, 6:] = False
    fused = fused._replace(memory_mask=mask)
    noise = fused.memory.clone()
    noise[~mask] = torch.randn(int((~mask).sum()), 16) * 100
    with torch.no_grad():
        logits = head(fused, target)
        assert torch.equal(logits, head(fused._replace(memory=noise), target))
        assert torch.equal(head(fused), head(fused._replace(memory=noise)))
        real = fused.memory.clone()
        real[1, 2] += 3.0
        changed = head(fused._replace(memory=real), target)
        assert not torch.allclose(changed[1], logits[1]) and torch.equal(changed[0], logits[0])


def test_text_models_saved_before_the_memory_encoder_load_without_one():
    state = text_state(layers=1, heads=2)
    assert task_for(state).text.memory_layers == 1  # the default for new models
    options = {k: v for k, v in state.options.items() if k != "memory_layers"}
    old = state.model_copy(update={"options": options})
    assert task_for(old).text.memory_layers == 0
    assert task_for(old).head(16, 1, 0.0).memory_encoder is None


def test_generated_outputs_decode_score_serve_and_combine():
    task = task_for(text_state(beam=2, nbest=2))
    values, known = task.encode(SENTENCES[:4])
    width = task.output_shape[1]
    outputs = np.full((4, 2, width), PAD_ID, np.float32)
    for row in range(4):
        ids = values[row, 1 : np.flatnonzero(values[row] == EOS_ID)[0]]
        outputs[row, 0, 1 : 1 + len(ids)] = ids
        outputs[row, 1, 1 : 1 + len(ids) - 1] = ids[:-1]  # the runner-up drops a word
    outputs[:, 0, 0], outputs[:, 1, 0] = -1.0, -2.0
    decoded = task.decode(outputs)
    assert list(decoded["text"]) == SENTENCES[:4]
    metrics = task.evaluate(values, known, decoded)
    assert metrics["rows"] == 4 and metrics["wer"] == 0 and metrics["exact_match"] == 1
    assert task.score(values, known, decoded) == 0.0  # -WER: higher is better
    columns = task.columns(decoded)
    assert list(columns["y_predicted"]) == SENTENCES[:4]
    best = json.loads(columns["y_nbest"][0])
    assert [h["log_probability"] for h in best] == [-1.0, -2.0]
    assert best[1]["text"] == " ".join(SENTENCES[0].split()[:-1])
    response = task.prediction(decoded, 1)
    assert isinstance(response, TargetPrediction) and response.predicted == SENTENCES[1]
    reference, _ = task.reference(decoded)
    assert np.allclose(task.explained_value(decoded, reference), 1.0)
    worse = task.decode(outputs[:, ::-1].copy())
    assert (task.explained_value(worse, reference) < 1.0).all()
    assert list(task.combine([worse, decoded])["text"]) == SENTENCES[:4]  # the surer model


def phrase_table(rows=240, seed=0):
    """A number column that names a phrase: the text target is a function of it."""
    rng = np.random.default_rng(seed)
    numbers = rng.integers(0, 30, rows)
    texts = [f"{WORDS[n % 10]} {WORDS[n // 10]} {WORDS[(n * 7) % 10]}" for n in numbers]
    frame = pd.DataFrame({"n": numbers.astype(str), "text": texts})
    frame["split"] = np.where(np.arange(rows) >= rows - 40, "test", "train")
    return frame


@pytest.fixture(scope="module")
def text_model():
    config = Config.model_validate(
        {
            "targets": [{"column": "text", "task": "text", "options": {"layers": 1}}],
            "train": {"max_epochs": 40, "batch_size": 32, "lr": 5e-3, "patience": 50},
        }
    )
    return Model(config=config).fit(phrase_table())


def test_a_text_model_learns_saves_and_reloads(text_model, tmp_path):
    assert text_model.task().name == "text"
    # it learned: far better than writing the most common training text for every row
    frame = phrase_table()
    common = frame.loc[frame["split"] == "train", "text"].mode()[0]
    truth = frame.loc[frame["split"] == "test", "text"].tolist()
    constant = word_error_rate(truth, [common] * len(truth))
    assert text_model.metrics_["test"]["text"]["wer"] < min(0.7, constant - 0.2)
    table = phrase_table(seed=1).head(20)
    before = text_model.predict(table)
    text_model.save(tmp_path / "m")
    loaded = Model.load(tmp_path / "m")
    after = loaded.predict(table)
    assert list(after["text_predicted"]) == list(before["text_predicted"])
    assert np.allclose(after["text_log_probability"], before["text_log_probability"], atol=1e-6)


def test_greedy_is_beam_one_and_beams_give_n_best(text_model):
    table = phrase_table(seed=2).head(16)
    greedy = text_model.predict(table)
    text_model.set_decoding(beam=1)
    assert greedy.equals(text_model.predict(table))
    text_model.set_decoding(beam=3, nbest=3)
    try:
        beams = text_model.predict(table)
    finally:
        text_model.set_decoding(beam=1, nbest=1)
    lists = [json.loads(cell) for cell in beams["text_nbest"]]
    assert all(len(items) == 3 for items in lists)
    assert all(
        items[0]["text"] == text for items, text in zip(lists, beams["text_predicted"], strict=True)
    )
    with pytest.raises(BadInputError, match="nbest"):
        text_model.set_decoding(nbest=4)


def test_decoding_settings_need_a_text_target(tmp_path):
    frame = phrase_table()
    frame["label"] = (frame["n"].astype(int) > 14).map({True: "big", False: "small"})
    config = Config.model_validate(
        {"targets": [{"column": "label"}], "inputs": ["n"], "train": {"max_epochs": 1}}
    )
    model = Model(config=config).fit(frame)
    with pytest.raises(BadInputError, match="only generated targets"):
        model.set_decoding(beam=3)


def test_a_text_target_and_a_label_train_together():
    frame = phrase_table()
    frame["label"] = (frame["n"].astype(int) > 14).map({True: "big", False: "small"})
    config = Config.model_validate(
        {
            "targets": [
                {"column": "text", "task": "text", "options": {"layers": 1}},
                {"column": "label"},
            ],
            "inputs": ["n"],
            "train": {"max_epochs": 2},
        }
    )
    model = Model(config=config).fit(frame)
    predicted = model.predict(frame.head(5))
    assert {"text_predicted", "label_predicted", "label_prob_big"} <= set(predicted)
    assert set(model.metrics_["test"]) == {"text", "label"}


def test_a_run_with_nothing_to_score_is_an_error():
    frame = phrase_table()
    frame["label"] = np.where(frame["split"] == "test", "unseen", "a")
    frame.loc[frame.index[:100], "label"] = "b"
    config = Config.model_validate({"targets": [{"column": "label"}], "inputs": ["n"]})
    with pytest.raises(BadInputError, match="none of the 40 test rows"):
        Model(config=config).fit(frame)


def test_cli_train_predict_evaluate_a_text_target(tmp_path):
    from typer.testing import CliRunner

    from polymodal.cli import app

    runner = CliRunner()
    frame = phrase_table(rows=200)
    frame["text"] = frame["text"] + " " + frame.index.astype(str)  # nearly unique: text
    frame.to_csv(tmp_path / "t.csv", index=False)

    def invoke(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    trained = invoke("train", tmp_path / "t.csv", "--target", "text", "--epochs", 2,
                     "--out", tmp_path / "m")  # fmt: skip
    assert "wer" in trained and "examples" in trained
    invoke("predict", tmp_path / "m", tmp_path / "t.csv", "-o", tmp_path / "p.csv",
           "--beam", 2, "--nbest", 2)  # fmt: skip
    predicted = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert len(predicted) == 200
    assert {"text_predicted", "text_log_probability", "text_nbest"} <= set(predicted)
    assert all(len(json.loads(cell)) == 2 for cell in predicted["text_nbest"])
    invoke("evaluate", tmp_path / "m", tmp_path / "t.csv", "--json", tmp_path / "e.json")
    scores = json.loads((tmp_path / "e.json").read_text())["text"]
    assert scores["rows"] == 200 and 0 <= scores["cer"] and "cider_d" in scores
    frame.assign(text="").to_csv(tmp_path / "empty.csv", index=False)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "m"), str(tmp_path / "empty.csv")])
    assert result.exit_code != 0 and "no row has a value of target text" in result.output


def test_tasks_without_options_refuse_them():
    labels = pd.Series(["cat", "dog", "cow"] * 10)
    with pytest.raises(
        BadInputError, match=r"multiclass target, which takes no options \(given: beam"
    ):
        fit_target(
            pd.DataFrame({"y": labels}), TargetConfig(column="y", options={"beam": 2}), "t.csv"
        )


def tone_phrases(folder):
    """20 WAVs of 1 to 20 tones, their words as `text`, a `label` and a `colour` category."""
    words = list(TONE_WORDS)
    records = []
    for count in range(1, 21):
        said = [words[(count + i) % 3] for i in range(count)]
        write_tones(folder / f"{count}.wav", [TONE_WORDS[w] for w in said], seed=count)
        records.append(
            {"sound": f"{count}.wav", "text": " ".join(said), "label": count % 2,
             "colour": ["red", "blue"][count % 2]}
        )  # fmt: skip
    pd.DataFrame(records).to_csv(folder / "data.csv", index=False)
    return read_table(folder / "data.csv")


def test_a_text_target_keeps_its_audio_inputs_whole(tmp_path):
    """Fitting for a text target keeps the longest clip whole (its last words are in the tail
    a label's crop cuts off); the same column fitted for a label is cropped."""
    table = tone_phrases(tmp_path)
    rows = np.arange(len(table))

    def crop(target: TargetConfig) -> int:
        config = Config(targets=[target], inputs=["sound"])
        return fit_schema(table, rows, config).input("sound").frames

    longest = 20 * 0.4 * 16_000 / AudioSettings().hop_length
    assert crop(TargetConfig(column="text", task="text")) >= longest
    assert crop(TargetConfig(column="label", task="multiclass")) < longest


def test_the_network_marks_the_audio_span_of_the_memory_for_ctc(tmp_path):
    """Of a category and an audio input, only the audio's tokens are a timed span, and a
    teacher-forced text head scores CTC on exactly those tokens."""
    table = tone_phrases(tmp_path)
    target = TargetConfig(column="text", task="text", options={"ctc_weight": 0.3})
    config = Config(targets=[target], inputs=["colour", "sound"])
    config.model.dim, config.model.layers = 16, 1
    schema = fit_schema(table, np.arange(len(table)), config)
    net = MultimodalNet(schema, config.model).eval()
    features = to_tensors(encode_inputs(schema, table, ProblemLog(), FeatureCache(enabled=False)))
    encoded = net.encode(features)
    fused = net.fuse_encoded(encoded)
    colour, sound = encoded["colour"].tokens.shape[1], encoded["sound"].tokens.shape[1]
    assert fused.timed == ((fused.readout + colour, fused.readout + colour + sound),)
    start, end = fused.timed[0]
    assert torch.equal(fused.memory[:, start:end], encoded["sound"].tokens)  # concat: as encoded
    target = torch.from_numpy(net.tasks[0].encode(table.frame["text"].tolist())[0])
    out = net.heads[0](fused, target)
    assert isinstance(out, TeacherForced) and torch.isfinite(out.ctc) and out.ctc > 0
