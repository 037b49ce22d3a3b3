"""Scores for generated text (captions, transcripts) against reference texts.

Library use:

* WER and CER come from ``jiwer`` (``process_words`` / ``process_characters``), summed over the
  corpus so that the rate is total edits over total reference words (characters).
* BLEU-4 and chrF come from ``sacrebleu`` (corpus level), rescaled from 0..100 to 0..1.
* CIDEr-D is written here, following Vedantam et al. (2015) and the coco-caption reference
  implementation (``pycocoevalcap`` CIDEr-D scorer): document frequencies over the references of
  the evaluated corpus, clipped tf-idf similarity and a Gaussian length penalty.

Every metric first applies :func:`normalise` (lowercase, strip, collapse whitespace) to both
sides. All functions take the references and the hypotheses as parallel lists, and raise
``ValueError`` when the lists are empty or of different lengths.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import jiwer
from sacrebleu.metrics import BLEU, CHRF

__all__ = [
    "METRIC_DIRECTIONS",
    "bleu4",
    "char_error_rate",
    "chrf",
    "cider_d",
    "exact_match",
    "normalise",
    "text_metrics",
    "word_error_rate",
]

#: Metric name -> True where a higher value is better.
METRIC_DIRECTIONS: dict[str, bool] = {
    "wer": False,
    "cer": False,
    "bleu4": True,
    "chrf": True,
    "cider_d": True,
    "exact_match": True,
}

_WHITESPACE = re.compile(r"\s+")
_PUNCTUATION = re.compile(r"([,.;:!?])")
#: Punctuation removed before CIDEr-D tokenisation.
_CIDER_PUNCTUATION = str.maketrans("", "", ".,!?;:")
_CIDER_MAX_N = 4


def normalise(text: str) -> str:
    """Lowercase, punctuation (, . ; : ! ?) as words of its own, every run of whitespace one
    space. "seven, a" and "seven , a" are the same text: a decoder joins punctuation to the
    word before it whatever spacing the references used, and neither spacing is an error."""
    return _WHITESPACE.sub(" ", _PUNCTUATION.sub(r" \1 ", text.lower())).strip()


def _check_lengths(references: Sequence[object], hypotheses: Sequence[str]) -> None:
    """Raise ``ValueError`` on empty input or on references/hypotheses of different lengths."""
    if len(references) != len(hypotheses):
        raise ValueError(
            f"references and hypotheses differ in length: {len(references)} references, "
            f"{len(hypotheses)} hypotheses"
        )
    if len(references) == 0:
        raise ValueError("references and hypotheses are empty")


def _error_rate(references: list[str], hypotheses: list[str], *, unit: str) -> float:
    """Corpus error rate (total edits / total reference units) for ``unit`` "word" or "char".

    Pairs where either side is empty are counted here (an empty hypothesis deletes every
    reference unit, an empty reference makes every hypothesis unit an insertion), because some
    jiwer versions refuse empty strings; jiwer aligns the other pairs.
    """
    _check_lengths(references, hypotheses)
    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]

    def size(text: str) -> int:
        return len(text.split()) if unit == "word" else len(text)

    edits = 0
    ref_units = 0
    aligned_refs: list[str] = []
    aligned_hyps: list[str] = []
    for ref, hyp in zip(refs, hyps, strict=True):
        if ref and hyp:
            aligned_refs.append(ref)
            aligned_hyps.append(hyp)
        else:
            edits += size(ref) + size(hyp)  # one side is empty: all deletions or insertions
            ref_units += size(ref)
    if aligned_refs:
        process = jiwer.process_words if unit == "word" else jiwer.process_characters
        out = process(aligned_refs, aligned_hyps)
        edits += out.substitutions + out.deletions + out.insertions
        ref_units += out.substitutions + out.deletions + out.hits
    if ref_units == 0:
        raise ValueError(f"{unit} error rate is undefined when every reference is empty")
    return edits / ref_units


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate: total word edits / total reference words (via jiwer).

    Texts are normalised first. An empty hypothesis counts all its reference words as
    deletions. Raises ``ValueError`` if every reference is empty.
    """
    return _error_rate(references, hypotheses, unit="word")


def char_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus character error rate: total character edits / total reference characters (jiwer).

    Texts are normalised first; the single spaces between words count as characters. An empty
    hypothesis counts all its reference characters as deletions. Raises ``ValueError`` if every
    reference is empty.
    """
    return _error_rate(references, hypotheses, unit="char")


def bleu4(references: list[str], hypotheses: list[str]) -> float:
    """Corpus BLEU-4 on a 0..1 scale (sacrebleu), one reference per hypothesis.

    Uses sacrebleu's defaults: the "13a" tokenizer, ``smooth_method="exp"`` (only acts when an
    n-gram order has no match in the whole corpus) and ``effective_order=False`` (the latter
    matters only for sentence-level BLEU). Texts are normalised (so lowercased) first.
    """
    _check_lengths(references, hypotheses)
    metric = BLEU(tokenize="13a", smooth_method="exp", effective_order=False, max_ngram_order=4)
    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]
    return metric.corpus_score(hyps, [refs]).score / 100.0


def chrf(references: list[str], hypotheses: list[str]) -> float:
    """Corpus chrF on a 0..1 scale (sacrebleu defaults: character 6-grams, beta=2, no words).

    Texts are normalised first.
    """
    _check_lengths(references, hypotheses)
    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]
    return CHRF().corpus_score(hyps, [refs]).score / 100.0


def _cider_tokens(text: str) -> list[str]:
    """CIDEr-D tokens: normalise, drop the characters ``.,!?;:`` and split on whitespace."""
    return normalise(text).translate(_CIDER_PUNCTUATION).split()


def _ngram_counts(tokens: list[str]) -> Counter[tuple[str, ...]]:
    """Counts of every n-gram of ``tokens`` for n = 1..4."""
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, _CIDER_MAX_N + 1):
        for start in range(len(tokens) - n + 1):
            counts[tuple(tokens[start : start + n])] += 1
    return counts


def _tfidf(
    counts: Counter[tuple[str, ...]], doc_freq: Counter[tuple[str, ...]], log_rows: float
) -> tuple[list[dict[tuple[str, ...], float]], list[float]]:
    """Per-order tf-idf vectors and their Euclidean norms (index 0 holds unigrams)."""
    vecs: list[dict[tuple[str, ...], float]] = [{} for _ in range(_CIDER_MAX_N)]
    for gram, tf in counts.items():
        idf = log_rows - math.log(max(1.0, doc_freq[gram]))
        vecs[len(gram) - 1][gram] = tf * idf
    norms = [math.sqrt(sum(v * v for v in vec.values())) for vec in vecs]
    return vecs, norms


def cider_d(references: list[list[str]], hypotheses: list[str], sigma: float = 6.0) -> float:
    """Corpus CIDEr-D (Vedantam et al. 2015, as in the coco-caption CIDEr-D scorer).

    ``references[i]`` is the list of reference texts for ``hypotheses[i]`` (at least one).
    Tokens: lowercased text with ``.,!?;:`` removed, split on whitespace. For n = 1..4, each text
    becomes a tf-idf vector of its n-grams, with ``idf(g) = log(N) - log(max(1, df(g)))``, where
    N is the number of rows and ``df(g)`` the number of rows whose reference set contains ``g``.
    Per order the similarity with one reference is the clipped dot product
    ``sum_g min(h_g, r_g) * r_g / (|h| * |r|)`` (0 when a norm is 0), times the Gaussian length
    penalty ``exp(-(len_h - len_r)^2 / (2 sigma^2))``. A row scores 10 times the mean over the
    four orders of the mean over its references; the corpus score is the mean over rows.

    Lengths are token counts; coco-caption counts bigrams instead, which differs only by one on
    both sides (so gives the same difference) whenever both texts are non-empty, and an empty
    text scores 0 either way.
    """
    _check_lengths(references, hypotheses)
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"row {i}: references must be a non-empty list of strings")

    ref_tokens = [[_cider_tokens(r) for r in refs] for refs in references]
    ref_counts = [[_ngram_counts(toks) for toks in row] for row in ref_tokens]
    doc_freq: Counter[tuple[str, ...]] = Counter()
    for row in ref_counts:
        doc_freq.update({gram for counts in row for gram in counts})
    log_rows = math.log(float(len(references)))

    row_scores: list[float] = []
    for hypothesis, row_tokens, row_counts in zip(hypotheses, ref_tokens, ref_counts, strict=True):
        hyp_tokens = _cider_tokens(hypothesis)
        hyp_vecs, hyp_norms = _tfidf(_ngram_counts(hyp_tokens), doc_freq, log_rows)
        total = 0.0  # sum over references and orders
        for tokens, counts in zip(row_tokens, row_counts, strict=True):
            ref_vecs, ref_norms = _tfidf(counts, doc_freq, log_rows)
            delta = float(len(hyp_tokens) - len(tokens))
            penalty = math.exp(-(delta**2) / (2.0 * sigma**2))
            for hyp_vec, ref_vec, h_norm, r_norm in zip(
                hyp_vecs, ref_vecs, hyp_norms, ref_norms, strict=True
            ):
                if h_norm == 0.0 or r_norm == 0.0:
                    continue
                dot = sum(
                    min(v, ref_vec.get(g, 0.0)) * ref_vec.get(g, 0.0) for g, v in hyp_vec.items()
                )
                total += dot / (h_norm * r_norm) * penalty
        row_scores.append(10.0 * total / (_CIDER_MAX_N * len(row_tokens)))
    return sum(row_scores) / len(row_scores)


def exact_match(references: list[str], hypotheses: list[str]) -> float:
    """Share of rows whose normalised hypothesis equals the normalised reference."""
    _check_lengths(references, hypotheses)
    hits = sum(normalise(r) == normalise(h) for r, h in zip(references, hypotheses, strict=True))
    return hits / len(references)


def text_metrics(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """All metrics of :data:`METRIC_DIRECTIONS` for one reference per hypothesis.

    CIDEr-D uses each row's reference as a one-element reference list. Raises ``ValueError`` on
    empty input or on a length mismatch.
    """
    _check_lengths(references, hypotheses)
    return {
        "wer": word_error_rate(references, hypotheses),
        "cer": char_error_rate(references, hypotheses),
        "bleu4": bleu4(references, hypotheses),
        "chrf": chrf(references, hypotheses),
        "cider_d": cider_d([[r] for r in references], hypotheses),
        "exact_match": exact_match(references, hypotheses),
    }
