"""Tests for polymodal.tasks.text.metrics (expected values derived by hand, not by the code)."""

from __future__ import annotations

import math

import pytest

from polymodal.tasks.text.metrics import (
    METRIC_DIRECTIONS,
    bleu4,
    char_error_rate,
    chrf,
    cider_d,
    exact_match,
    normalise,
    text_metrics,
    word_error_rate,
)

# --------------------------------------------------------------------------- normalisation / WER


def test_normalise_lowercases_strips_and_collapses_whitespace():
    assert normalise("  The\tCAT \n sat  ") == "the cat sat"
    assert normalise("") == ""


def test_wer_hand_computed_deletion():
    # one deletion ("three") over three reference words
    assert word_error_rate(["seven three one"], ["seven one"]) == pytest.approx(1 / 3)


def test_wer_hand_computed_substitution_and_insertion():
    # b -> x substitution, e inserted: 2 edits / 4 reference words
    assert word_error_rate(["a b c d"], ["a x c d e"]) == pytest.approx(2 / 4)


def test_wer_is_corpus_level_not_mean_of_rows():
    # (1 + 2) edits / (3 + 4) words = 3/7, whereas the row mean would be (1/3 + 1/2) / 2
    wer = word_error_rate(["seven three one", "a b c d"], ["seven one", "a x c d e"])
    assert wer == pytest.approx(3 / 7)


def test_wer_empty_hypothesis_counts_all_deletions():
    assert word_error_rate(["the cat sat"], [""]) == pytest.approx(1.0)
    assert word_error_rate(["the cat sat"], ["   "]) == pytest.approx(1.0)
    # mixed corpus: 3 deletions + 0 edits over 3 + 2 words
    assert word_error_rate(["the cat sat", "a dog"], ["", "a dog"]) == pytest.approx(3 / 5)


def test_wer_empty_reference_counts_insertions():
    # 0 edits over "a b" plus 1 insertion for the empty reference row: 1 / 2
    assert word_error_rate(["a b", ""], ["a b", "x"]) == pytest.approx(1 / 2)


def test_wer_all_references_empty_is_undefined():
    with pytest.raises(ValueError, match="empty"):
        word_error_rate([""], ["x"])


def test_wer_identical_is_zero_and_ignores_case_and_spacing():
    assert word_error_rate(["the cat sat"], ["the cat sat"]) == 0.0
    assert word_error_rate(["The  cat sat "], ["  the CAT\tsat"]) == 0.0


# --------------------------------------------------------------------------- CER


def test_cer_hand_computed():
    # "abcd" -> "abd": one deletion over 4 characters
    assert char_error_rate(["abcd"], ["abd"]) == pytest.approx(1 / 4)
    # "ab c" -> "abc": the space is a character, so one deletion over 4
    assert char_error_rate(["ab c"], ["abc"]) == pytest.approx(1 / 4)
    # "kitten" -> "sitting": 2 substitutions + 1 insertion over 6 characters
    assert char_error_rate(["kitten"], ["sitting"]) == pytest.approx(3 / 6)


def test_cer_empty_identical_and_normalised():
    assert char_error_rate(["abc"], [""]) == pytest.approx(1.0)
    assert char_error_rate(["Hello  World"], ["hello world "]) == 0.0
    # corpus level: (1 + 0) edits over (4 + 2) characters
    assert char_error_rate(["abcd", "xy"], ["abd", "xy"]) == pytest.approx(1 / 6)


# --------------------------------------------------------------------------- BLEU


def test_bleu_identical_corpus_is_one():
    refs = ["the cat sat on the mat", "a dog runs in the park today"]
    assert bleu4(refs, list(refs)) == pytest.approx(1.0)


def test_bleu_hand_computed_one_substitution():
    # ref and hyp both 7 words (brevity penalty 1); "the" -> "a" in position 5.
    # matched 1-grams 6/7, 2-grams 4/6, 3-grams 2/5, 4-grams 1/4; BLEU = geometric mean.
    expected = (6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25
    score = bleu4(["the cat sat on the mat today"], ["the cat sat on a mat today"])
    assert score == pytest.approx(expected, abs=1e-9)


def test_bleu_brevity_penalty_for_prefix_hypothesis():
    # Known BLEU property: a prefix of the reference has all precisions 1, so BLEU equals the
    # brevity penalty exp(1 - r / c), here r = 9 reference words and c = 5 hypothesis words.
    score = bleu4(["the quick brown fox jumps over the lazy dog"], ["the quick brown fox jumps"])
    assert score == pytest.approx(math.exp(1 - 9 / 5), abs=1e-9)


def test_bleu_decreases_with_fewer_matching_ngrams():
    ref = ["the quick brown fox jumps over the lazy dog"]
    one_wrong = bleu4(ref, ["the quick brown fox jumps over the lazy cat"])
    two_wrong = bleu4(ref, ["the quick brown cow jumps over the lazy cat"])
    assert 1.0 > one_wrong > two_wrong > 0.0


def test_bleu_ignores_case():
    assert bleu4(["The Cat sat on the mat"], ["the cat SAT on the mat"]) == pytest.approx(1.0)


# --------------------------------------------------------------------------- chrF


def test_chrf_identical_is_one_and_disjoint_is_zero():
    assert chrf(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)
    assert chrf(["abc def"], ["xyz uvw"]) == 0.0


def test_chrf_partial_overlap_is_between():
    score = chrf(["the cat sat on the mat"], ["the cat sat on a rug"])
    assert 0.0 < score < 1.0


# --------------------------------------------------------------------------- CIDEr-D


def _hand_cider_d(refs: list[list[str]], hyps: list[str], sigma: float) -> float:
    """Direct transcription of the published CIDEr-D formula, written independently."""

    def tokens(text):
        text = text.lower()
        for p in ".,!?;:":
            text = text.replace(p, "")
        return text.split()

    def ngrams(words, n):
        counts = {}
        for i in range(len(words) - n + 1):
            g = " ".join(words[i : i + n])
            counts[g] = counts.get(g, 0) + 1
        return counts

    n_rows = len(refs)
    total = 0.0
    for row_refs, hyp in zip(refs, hyps, strict=True):
        hyp_words = tokens(hyp)
        per_n = []
        for n in (1, 2, 3, 4):
            # df(g): number of rows whose reference set contains g
            df = {}
            for other in refs:
                seen = set()
                for r in other:
                    seen.update(ngrams(tokens(r), n))
                for g in seen:
                    df[g] = df.get(g, 0) + 1

            def weight(g, tf, df=df):
                return tf * (math.log(n_rows) - math.log(max(1, df.get(g, 0))))

            h = {g: weight(g, tf) for g, tf in ngrams(hyp_words, n).items()}
            sims = []
            for r in row_refs:
                r_words = tokens(r)
                rv = {g: weight(g, tf) for g, tf in ngrams(r_words, n).items()}
                norm_h = math.sqrt(sum(x * x for x in h.values()))
                norm_r = math.sqrt(sum(x * x for x in rv.values()))
                clipped = sum(min(h[g], rv.get(g, 0.0)) * rv.get(g, 0.0) for g in h)
                cos = clipped / (norm_h * norm_r) if norm_h > 0 and norm_r > 0 else 0.0
                pen = math.exp(-((len(hyp_words) - len(r_words)) ** 2) / (2 * sigma**2))
                sims.append(cos * pen)
            per_n.append(sum(sims) / len(sims))
        total += 10 * sum(per_n) / 4
    return total / n_rows


CIDER_REFS = [
    ["A man rides a horse.", "a person riding a horse on the beach"],
    ["two dogs play in the snow", "Dogs playing in snow!"],
    ["a cat sits on a mat", "the cat is on the mat"],
]
CIDER_HYPS = ["a man riding a horse", "Two dogs in the snow", "a cat on the mat."]


@pytest.mark.parametrize("sigma", [6.0, 2.0])
def test_cider_d_matches_published_formula(sigma):
    expected = _hand_cider_d(CIDER_REFS, CIDER_HYPS, sigma)
    assert expected > 0.0
    assert cider_d(CIDER_REFS, CIDER_HYPS, sigma=sigma) == pytest.approx(expected, abs=1e-9)


def test_cider_d_closed_form_identical_and_disjoint():
    # N = 2 rows. Row 1: hypothesis equals its only reference, every n-gram has df = 1, so the
    # tf-idf vectors are equal and each of the 4 orders has similarity 1 -> 10. Row 2 shares
    # nothing -> 0. Corpus mean = 5.
    score = cider_d([["a b c d"], ["e f g h"]], ["a b c d", "x"])
    assert score == pytest.approx(5.0, abs=1e-12)


def test_cider_d_closed_form_clipping():
    # Row 1: hyp "a a" vs ref "a b"; row 2: hyp "c d" equals ref "c d". N = 2, every n-gram
    # (including the unseen "a a") has idf L = log 2.
    # Row 1 unigrams: hyp {a: 2L}, ref {a: L, b: L}; clipped dot = min(2L, L) * L = L^2,
    # norms 2L and sqrt(2) L -> 1 / (2 sqrt 2). Bigrams do not match; orders 3 and 4 are empty.
    # Row 1 = 10 * (1 / (2 sqrt 2)) / 4. Row 2: orders 1 and 2 give 1 -> 10 * 2 / 4 = 5.
    expected = (10 * (1 / (2 * math.sqrt(2))) / 4 + 5.0) / 2
    score = cider_d([["a b"], ["c d"]], ["a a", "c d"])
    assert score == pytest.approx(expected, abs=1e-12)


def test_cider_d_identical_hypothesis_in_diverse_corpus_scores_high():
    refs = [
        ["a man is riding a brown horse"],
        ["two dogs are playing in the snow"],
        ["a cat sleeps on a red sofa"],
        ["people walk along a busy street"],
    ]
    # Row 1 repeats its reference: identical tf-idf vectors give similarity 1 for every order
    # (idf > 0 since no n-gram occurs in all 4 rows), so the row scores 10. The other
    # hypotheses share no word with their reference and score 0. Corpus mean = 10 / 4.
    hyps = [refs[0][0], "a dog sits", "the sky is blue", "an old car"]
    assert cider_d(refs, hyps) == pytest.approx(10.0 / 4, abs=1e-12)
    # the same hypothesis against a different reference scores far lower
    assert cider_d(refs, [refs[1][0], *hyps[1:]]) < 0.1


def test_cider_d_length_penalty():
    refs = [["a cat sits on the mat"], ["two dogs play in the snow"], ["a red car"]]
    hyps = ["a cat sits on the mat in the sun today", "two dogs play", "a red car"]
    penalised = cider_d(refs, hyps, sigma=6.0)
    no_penalty = cider_d(refs, hyps, sigma=1e9)
    assert penalised < no_penalty
    # same lengths everywhere -> sigma has no effect
    assert cider_d(refs, [r[0] for r in refs], sigma=6.0) == pytest.approx(
        cider_d(refs, [r[0] for r in refs], sigma=1e9), abs=1e-12
    )


def test_cider_d_repeated_words_do_not_inflate_score():
    refs = [["a cat"], ["the dog runs"], ["birds fly high"]]
    repeated = cider_d(refs, ["a a a a a", "the dog runs", "birds fly high"])
    proper = cider_d(refs, ["a cat", "the dog runs", "birds fly high"])
    assert repeated < proper


def test_cider_d_tokenisation_ignores_case_and_punctuation():
    refs = [["a cat on a mat"], ["the dog runs"]]
    plain = cider_d(refs, ["a cat on a mat", "a dog"])
    noisy = cider_d(refs, ["A cat, on a mat!", "A dog."])
    assert noisy == pytest.approx(plain, abs=1e-12)


def test_cider_d_rejects_bad_reference_rows():
    with pytest.raises(ValueError):
        cider_d([[]], ["a"])
    with pytest.raises(ValueError):
        cider_d(["a cat"], ["a cat"])  # type: ignore[list-item]


# --------------------------------------------------------------------------- exact match / API


def test_exact_match_normalised():
    refs = ["The cat", "a dog", "bird"]
    hyps = ["the  CAT ", "a dogs", "bird"]
    assert exact_match(refs, hyps) == pytest.approx(2 / 3)


def test_metric_directions_match_text_metrics_keys():
    result = text_metrics(["the cat sat on the mat", "a dog"], ["the cat sat on a mat", "a dog"])
    assert set(result) == set(METRIC_DIRECTIONS)
    assert METRIC_DIRECTIONS["wer"] is False and METRIC_DIRECTIONS["cer"] is False
    assert all(METRIC_DIRECTIONS[k] for k in ("bleu4", "chrf", "cider_d", "exact_match"))
    assert all(isinstance(v, float) for v in result.values())
    assert result["exact_match"] == pytest.approx(0.5)
    assert result["wer"] == pytest.approx(1 / 8)  # one substitution over 6 + 2 words


def test_text_metrics_perfect_predictions():
    refs = ["a man rides a horse", "two dogs play in the snow", "a cat on a mat"]
    result = text_metrics(refs, list(refs))
    assert result["wer"] == 0.0 and result["cer"] == 0.0
    assert result["bleu4"] == pytest.approx(1.0)
    assert result["chrf"] == pytest.approx(1.0)
    assert result["exact_match"] == 1.0
    assert result["cider_d"] > 1.0


@pytest.mark.parametrize(
    "fn", [word_error_rate, char_error_rate, bleu4, chrf, exact_match, text_metrics]
)
def test_length_mismatch_raises_naming_both_lengths(fn):
    with pytest.raises(ValueError, match=r"2 references.*1 hypotheses"):
        fn(["a", "b"], ["a"])


def test_cider_d_length_mismatch_raises():
    with pytest.raises(ValueError, match=r"1 references.*2 hypotheses"):
        cider_d([["a"]], ["a", "b"])


def test_text_metrics_empty_input_raises():
    with pytest.raises(ValueError):
        text_metrics([], [])


def test_spacing_around_punctuation_is_not_an_error():
    """Decoders join punctuation to the word before it; references may space it apart."""
    assert (
        normalise("Seven, a red one.") == normalise("seven , a red one .") == "seven , a red one ."
    )
    assert word_error_rate(["a seven , a red circle"], ["a seven, a red circle"]) == 0.0
    assert word_error_rate(["a seven , a red circle"], ["a seven a red circle"]) == 1 / 6
