"""Fitting: learn the answer model's weights, calibration and threshold from question sets.

`collect` runs the real pipeline up to scoring on each question and keeps the
candidates' features with their labels (does the quote hold an expected
answer phrase?). `fit_model` then fits, with scikit-learn, a logistic ranker
over candidates and a logistic answer/decline decision over the best
candidate's evidence, calibrates the decision out of fold (Platt scaling on
scores of corpora each model did not see), and picks the threshold that keeps
the out-of-fold false-decline rate within its budget.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.analysis import Question
from rag.answering import find_candidates
from rag.embedding import Embedder
from rag.errors import InputError
from rag.index import Index, build_index, index_is_current, load_index
from rag.questionsets import EvalQuestion, contains_any, load_questions, set_files
from rag.retrieval import Hit
from rag.scoring import (
    CANDIDATE_FEATURES,
    MAX_QUOTES,
    MODEL_FORMAT,
    QUESTION_FEATURES,
    AnswerModel,
    Candidate,
    Linear,
    platt_probability,
    rank,
)
from rag.settings import Settings

# The share of answerable questions the decision may decline, out of fold: a wrong
# decline costs a reader an answer the articles hold; a wrong answer shows its sources.
FALSE_DECLINE_BUDGET = 0.05
# Units an answer quotes, on average over answerable questions, out of fold: a unit more
# than the best one joins when the ranker finds it nearly as likely to hold the answer as
# the best, with "nearly" fitted as the lowest share of the best's probability that keeps
# answers within this length. The budget goes to the questions whose ranking is least sure.
# One or two sentences, rows or items are what a reader takes in at a glance.
QUOTE_BUDGET = 2.0
# The regularisation strengths (scikit-learn's C) the decision's fit chooses among: a
# search space, not a setting; the fit picks one by held-out log loss (`_strength`).
DECISION_STRENGTHS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
# The same for the ranker, chosen by the share of questions whose best-ranked quote holds
# the answer, on corpora left out in turn (`_ranker_strength`).
RANKER_STRENGTHS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass(frozen=True)
class Example:
    """One question run through retrieval and scoring, ready to fit on."""

    question: EvalQuestion
    analysed: Question
    hits: tuple[Hit, ...]
    pool: tuple[Candidate, ...]
    labels: np.ndarray  # per candidate: its quote holds an expected answer phrase


def collect(
    index: Index, embedder: Embedder, questions: list[EvalQuestion], *, top_k: int = 5
) -> list[Example]:
    """Every question's candidates and labels, on the real index and model."""
    examples = []
    for q in questions:
        analysed, hits, pool = find_candidates(index, embedder, q.question, q.history, top_k=top_k)
        labels = np.array(
            [q.answerable and contains_any(c.text(), q.answer_contains) for c in pool], dtype=bool
        )
        examples.append(Example(q, analysed, tuple(hits), tuple(pool), labels))
    return examples


def fit_model(examples: list[Example], *, sources: list[str] | None = None) -> dict:
    """The answer model, as the data of `rag/models/answer.json`.

    Groups for out-of-fold calibration are the questions' corpora; with one
    corpus, five folds of its questions stand in.
    """
    kinds = {e.question.answerable for e in examples}
    if kinds != {True, False}:
        raise InputError(
            "the question sets need both answerable and unanswerable questions to fit on"
        )
    groups = np.array([e.question.corpus for e in examples])
    strength = _ranker_strength(examples, groups)
    ranker = {**_fit_ranker(examples, strength), "strength": strength}
    oof_scores = _out_of_fold_ranks(examples, groups, strength)
    # P(a candidate's quote answers) from its ranker score, fitted on out-of-fold scores.
    scored = [(s, e.labels) for e, s in zip(examples, oof_scores, strict=True) if e.pool]
    answerable = [e.question.answerable for e in examples if e.pool]
    unit_scores = np.concatenate([s for (s, _), a in zip(scored, answerable, strict=True) if a])
    unit_labels = np.concatenate([lab for (_, lab), a in zip(scored, answerable, strict=True) if a])
    ranker_platt = _platt(unit_scores, unit_labels)
    join_share = _join_share(examples, oof_scores, ranker_platt, QUOTE_BUDGET)
    X = np.array([_evidence(e, s) for e, s in zip(examples, oof_scores, strict=True)])
    y = np.array([e.question.answerable for e in examples])
    # The decision learns what evidence looks like when the best quote holds the answer,
    # against questions the articles don't answer: an answerable question whose best
    # quote (out of fold) misses teaches it nothing about either, and is left out of
    # the fit (it still counts in the false-decline budget below). Calibrated, its
    # probability is that of the best quote holding the answer.
    holds = np.array([_first_holds_scored(e, s) for e, s in zip(examples, oof_scores, strict=True)])
    taught = ~y | holds
    decider = _fit_linear(X[taught], y[taught], groups[taught])
    decision_oof = _out_of_fold_decisions(X, y, groups, taught)
    platt = _platt(decision_oof, holds)
    probabilities = platt_probability(platt, decision_oof)
    threshold = _threshold(probabilities, y, groups, FALSE_DECLINE_BUDGET)
    body = {
        "format": MODEL_FORMAT,
        "ranker": {
            "features": list(CANDIDATE_FEATURES),
            **ranker,
            "platt": [round(ranker_platt[0], 6), round(ranker_platt[1], 6)],
        },
        "decider": {
            "features": list(QUESTION_FEATURES),
            **decider,
            "platt": [round(platt[0], 6), round(platt[1], 6)],
            "threshold": round(threshold, 6),
            "false_decline_budget": FALSE_DECLINE_BUDGET,
        },
        "join_share": round(join_share, 6),
        "quote_budget": QUOTE_BUDGET,
        "fitted_on": {
            "sources": sorted(sources or []),
            "questions": len(examples),
            "answerable": int(y.sum()),
            "corpora": {g: int((groups == g).sum()) for g in sorted(set(groups.tolist()))},
            "candidates": int(sum(len(e.pool) for e in examples)),
        },
        "out_of_fold": {
            "false_decline": round(float((probabilities[y] < threshold).mean()), 4),
            "decline_of_unanswerable": round(
                float((probabilities[~y] < threshold).mean()) if (~y).any() else 1.0, 4
            ),
        },
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    return {"version": f"answer-{digest}", **body}


def model_from(examples: list[Example]) -> AnswerModel:
    """An `AnswerModel` fitted on ``examples`` (as `rag eval --folds` fits each fold)."""
    return AnswerModel.from_dict(fit_model(examples))


def write_model(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _candidate_rows(examples: list[Example]) -> tuple[np.ndarray, np.ndarray]:
    rows = [e for e in examples if e.question.answerable and e.pool]
    X = np.concatenate([np.array([c.features for c in e.pool]) for e in rows])
    y = np.concatenate([e.labels for e in rows])
    return X, y


def _fit_ranker(examples: list[Example], strength: float = 1.0) -> dict:
    """A pairwise logistic ranker: within each answerable question, every quote that holds
    an answer phrase should score above every quote that holds none. Each question weighs
    the same, however many pairs it has: a question with long passages would otherwise
    outvote ten short ones."""
    from sklearn.linear_model import LogisticRegression

    X, _ = _candidate_rows(examples)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    pairs, weights = [], []
    for e in examples:
        if not e.question.answerable or not e.labels.any() or e.labels.all():
            continue
        f = (np.array([c.features for c in e.pool]) - mean) / scale
        pairs.append((f[e.labels][:, None, :] - f[~e.labels][None, :, :]).reshape(-1, f.shape[1]))
        weights.append(np.full(len(pairs[-1]), 1 / len(pairs[-1])))
    D = np.concatenate(pairs)
    w = np.concatenate(weights)
    w = w / w.mean()
    fitted = LogisticRegression(C=strength, max_iter=2000, fit_intercept=False).fit(
        np.concatenate([D, -D]), np.r_[np.ones(len(D)), np.zeros(len(D))], np.r_[w, w]
    )
    return _as_data(mean, scale, fitted.coef_[0], 0.0)


def _ranker_strength(examples: list[Example], groups: np.ndarray) -> float:
    """The regularisation strength (C) of `RANKER_STRENGTHS` whose rankers, fitted
    without a corpus, most often put a quote holding the answer first in it."""
    splits = []
    for held in _folds(groups):
        train = [e for e, h in zip(examples, held, strict=True) if not h]
        tested = [e for e, h in zip(examples, held, strict=True) if h and e.question.answerable]
        if tested and any(e.question.answerable and e.labels.any() for e in train):
            splits.append((train, tested))

    def missed(strength: float, split: tuple[list[Example], list[Example]]) -> float:
        params = _fit_ranker(split[0], strength)
        return 1.0 - float(np.mean([_first_holds(params, e) for e in split[1]]))

    return _best_strength(RANKER_STRENGTHS, splits, missed)


def _first_holds(params: dict, example: Example) -> bool:
    if not example.pool:
        return False
    return _first_holds_scored(
        example, _score(params, np.array([c.features for c in example.pool]))
    )


def _first_holds_scored(example: Example, scores: np.ndarray) -> bool:
    """Whether the best-scored candidate's quote holds an expected answer phrase."""
    return bool(example.pool) and bool(example.labels[int(np.argmax(scores))])


def _fit_linear(X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict:
    """Standardised, L1-regularised logistic regression, as plain numbers. Each corpus
    weighs the same, however many questions it has. Its strength is the one of
    `DECISION_STRENGTHS` with the lowest log loss on corpora left out in turn (of the
    data given here only): several evidence features say much the same, and without
    it their weights grow large with opposite signs, fitted to the corpora at hand."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    Z = (X - scaler.mean_) / scale
    names, counts = np.unique(groups, return_counts=True)
    weights = (len(y) / len(names)) / counts[np.searchsorted(names, groups)]
    strength = _strength(Z, y, groups, weights)
    model = _logistic(strength).fit(Z, y, weights)
    return {
        **_as_data(scaler.mean_, scale, model.coef_[0], float(model.intercept_[0])),
        "strength": strength,
    }


def _logistic(strength: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        C=strength, l1_ratio=1.0, solver="liblinear", max_iter=5000, random_state=0
    )


def _strength(Z: np.ndarray, y: np.ndarray, groups: np.ndarray, weights: np.ndarray) -> float:
    """The regularisation strength (C) of `DECISION_STRENGTHS` with the lowest held-out
    log loss."""
    from sklearn.metrics import log_loss

    folds = [h for h in _folds(groups) if len(set(y[~h].tolist())) == 2 and h.any()]

    def loss(strength: float, held: np.ndarray) -> float:
        model = _logistic(strength).fit(Z[~held], y[~held], weights[~held])
        p = model.predict_proba(Z[held])[:, 1]
        return float(log_loss(y[held], p, sample_weight=weights[held], labels=[0, 1]))

    return _best_strength(DECISION_STRENGTHS, folds, loss)


def _best_strength(strengths: tuple[float, ...], folds: list, held_out_loss) -> float:
    """The strength with the lowest mean held-out loss over ``folds`` (the first of the
    best on a tie); 1.0 (scikit-learn's default) when there is no fold to judge by."""
    if not folds:
        return 1.0
    losses = [np.mean([held_out_loss(strength, fold) for fold in folds]) for strength in strengths]
    return float(strengths[int(np.argmin(losses))])


def _as_data(mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float) -> dict:
    """A fitted linear score as the model file stores it (and `Linear.from_dict` reads it)."""
    return {
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "coef": [round(float(v), 6) for v in coef],
        "intercept": round(float(intercept), 6),
    }


def _score(params: dict, X: np.ndarray) -> np.ndarray:
    return Linear.from_dict(params).score(X)


def _folds(groups: np.ndarray) -> list[np.ndarray]:
    """Held-out masks: one per corpus, or five interleaved folds when there is one corpus."""
    names = sorted(set(groups.tolist()))
    if len(names) > 1:
        return [groups == g for g in names]
    positions = np.arange(len(groups))
    return [positions % 5 == k for k in range(5)]


def _out_of_fold_ranks(
    examples: list[Example], groups: np.ndarray, strength: float = 1.0
) -> list[np.ndarray]:
    """Each question's candidate scores from a ranker fitted without its corpus."""
    scores: list[np.ndarray] = [np.zeros(0)] * len(examples)
    for held in _folds(groups):
        train = [e for e, h in zip(examples, held, strict=True) if not h]
        params = _fit_ranker(train, strength)
        for n in np.flatnonzero(held):
            pool = examples[n].pool
            scores[n] = _score(params, np.array([c.features for c in pool])) if pool else scores[n]
    return scores


def _evidence(example: Example, scores: np.ndarray) -> np.ndarray:
    return rank(example.analysed, list(example.pool), scores, list(example.hits))[2]


def _out_of_fold_decisions(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, taught: np.ndarray
) -> np.ndarray:
    """Each question's decision score from a decision fitted without its corpus, on the
    questions of the others that ``taught`` marks."""
    decisions = np.zeros(len(y))
    for held in _folds(groups):
        train = ~held & taught
        params = _fit_linear(X[train], y[train], groups[train])
        decisions[held] = _score(params, X[held])
    return decisions


def _platt(decisions: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling: P(answered) = 1 / (1 + exp(a * decision + b)), fitted out of fold."""
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression().fit(decisions[:, None], y)
    return -float(fitted.coef_[0][0]), -float(fitted.intercept_[0])


def _join_share(
    examples: list[Example],
    scores: list[np.ndarray],
    platt: tuple[float, float],
    budget: float,
) -> float:
    """The lowest share of the best candidate's quote probability at which a further one
    joins the answer that keeps the mean units quoted for answerable questions within
    ``budget``, on out-of-fold scores.

    The answers are simulated as `rag.answering` chooses its quotes, except that units
    the answer step would drop as near repeats of chosen ones count here: the length
    is, if anything, overestimated.
    """
    rows = [(e, s) for e, s in zip(examples, scores, strict=True) if e.question.answerable]
    rows = [(e, s) for e, s in rows if e.pool]
    if not rows:
        return 1.0
    for share in np.linspace(0.0, 1.0, 101):
        units = [_quoted_units(e, s, platt, float(share)) for e, s in rows]
        if float(np.mean(units)) <= budget:
            return float(share)
    return 1.0


def _quoted_units(
    example: Example, scores: np.ndarray, platt: tuple[float, float], share: float
) -> int:
    chosen: set[tuple[int, int]] = set()
    order = np.argsort(-scores, kind="stable")
    best = float(platt_probability(platt, scores[order[0]]))
    for n, i in enumerate(order):
        if n and float(platt_probability(platt, scores[i])) < share * best:
            break
        candidate = example.pool[i]
        group = {(candidate.hit.position, u) for u in candidate.units}
        if (n and len(chosen) + len(group) > MAX_QUOTES) or group & chosen:
            continue
        chosen |= group
        if len(chosen) >= MAX_QUOTES:
            break
    return len(chosen)


def _threshold(
    probabilities: np.ndarray, answerable: np.ndarray, groups: np.ndarray, budget: float
) -> float:
    """The highest threshold that declines at most ``budget`` of answerable questions,
    counted as the mean over corpora (as the figures are reported): a corpus with many
    questions does not set the threshold for the others."""
    names = sorted(set(groups.tolist()))
    for threshold in np.sort(probabilities[answerable])[::-1]:
        declined = [
            float((probabilities[answerable & (groups == g)] < threshold).mean())
            for g in names
            if (answerable & (groups == g)).any()
        ]
        if float(np.mean(declined)) <= budget:
            return float(threshold)
    return 0.0


def corpus_questions(
    set_paths: list[Path], corpora_root: Path, *, minimum: int = 1
) -> dict[str, list[EvalQuestion]]:
    """The questions of the sets, by the corpus they name; checked before anything is built:
    every corpus has its folder under ``corpora_root``, and there are ``minimum`` of them."""
    questions: dict[str, list[EvalQuestion]] = {}
    for path in set_files(set_paths):
        for q in load_questions(path):
            questions.setdefault(q.corpus, []).append(q)
    for name in sorted(questions):
        if not (corpora_root / name).is_dir():
            raise InputError(
                f"the question sets name the corpus {name!r} but {corpora_root / name} is no "
                "folder; pass --corpora with the folder that holds one folder per corpus"
            )
    if len(questions) < minimum:
        raise InputError(
            f"the question sets name {len(questions)} corpus ({', '.join(sorted(questions))}); "
            f"leaving one corpus out needs {minimum} or more"
        )
    return dict(sorted(questions.items()))


def load_corpora(
    questions: dict[str, list[EvalQuestion]],
    corpora_root: Path,
    cache_root: Path,
    settings: Settings,
    embedder: Embedder,
    *,
    progress: bool = False,
) -> dict[str, tuple[Index, list[EvalQuestion]]]:
    """Each corpus of `corpus_questions`, indexed (built when missing or out of date under
    ``cache_root/<corpus>/index``) from ``corpora_root/<corpus>``, with its questions."""
    loaded = {}
    for name, asked in questions.items():
        corpus_settings = settings.with_(
            corpus_dir=corpora_root / name, index_dir=cache_root / name / "index"
        )
        if not index_is_current(corpus_settings):
            build_index(corpus_settings, embedder, progress=progress)
        loaded[name] = (load_index(corpus_settings, embedder), asked)
    return loaded
