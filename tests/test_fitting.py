"""Fitting: `rag fit` reproduces the shipped answer model; folds, explain and the model file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from rag.answering import answer_question
from rag.cli import cli
from rag.embedding import Embedder
from rag.errors import InputError, SettingsError
from rag.fitting import collect, fit_model, model_from
from rag.index import Index
from rag.questionsets import load_questions
from rag.scoring import SHIPPED_MODEL, AnswerModel, load_model
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "benchmarks" / "questions"
HELD_OUT = ROOT / "benchmarks" / "heldout"  # never fitted on: new questions to judge by


def _sample(corpus: str = "corpus") -> list:
    rows = load_questions(QUESTIONS / "ai-careers" / "set-a.jsonl", corpus)
    rows = [q for q in rows if q.answerable][:30] + [q for q in rows if not q.answerable][:15]
    return [q.__class__(**{**q.__dict__, "corpus": corpus}) for q in rows]


def test_fit_on_a_small_sample_is_deterministic_and_answers(
    corpus_index: Index, embedder: Embedder
) -> None:
    examples = collect(corpus_index, embedder, _sample())
    first, second = fit_model(examples), fit_model(examples)
    assert first == second and first["version"].startswith("answer-")
    model = AnswerModel.from_dict(first)
    assert 0 < model.threshold < 1
    result = answer_question(corpus_index, embedder, "What is MLOps?", model=model)
    assert result.model == first["version"]
    assert 0 <= result.probability <= 1


def test_the_shipped_model_names_its_data_and_its_version_is_its_digest() -> None:
    data = json.loads(SHIPPED_MODEL.read_text())
    body = {k: v for k, v in data.items() if k != "version"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    assert data["version"] == f"answer-{digest}"
    assert set(data["fitted_on"]["corpora"]) == {
        "ai-careers",
        "equity-guide",
        "sourcegraph-handbook",
        "tts-handbook",
    }
    assert data["decider"]["false_decline_budget"] == 0.05
    assert load_model().version == data["version"]


def test_a_model_of_another_format_or_features_is_refused(tmp_path: Path) -> None:
    data = json.loads(SHIPPED_MODEL.read_text())
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**data, "format": 99}))
    with pytest.raises(SettingsError, match="run `rag fit`"):
        load_model(path)
    path.write_text(json.dumps({**data, "ranker": {**data["ranker"], "features": ["x"]}}))
    with pytest.raises(SettingsError, match="other features"):
        load_model(path)


def test_a_further_unit_joins_only_when_nearly_as_likely_as_the_best() -> None:
    """The join compares a unit with the best one: a close second joins a confident answer
    and an unsure one alike; a unit far less likely than the best does not."""
    model = load_model()
    assert 0 < model.join_share < 1
    for best in (-2.0, 0.0, 3.0):  # unsure, middling and confident answers
        assert model.joins(best, best)
        assert model.joins(best - 1e-6, best)
        assert not model.joins(best - 20.0, best)
        ratio = model.quote_probability(best - 1.0) / model.quote_probability(best)
        assert model.joins(best - 1.0, best) == (ratio >= model.join_share)


def _on_benchmark_corpora(tmp_path: Path, *args: str) -> Result:
    """A `rag` command over the benchmark corpora, their indexes built once in ``tmp_path``."""
    where = ["--corpora", str(ROOT / "benchmarks" / "corpora"), "--cache", str(tmp_path / "cache")]
    return CliRunner().invoke(cli, [*args, *where])


def test_rag_fit_reproduces_the_shipped_model(tmp_path: Path) -> None:
    """The fit command, run on the question sets over the corpora, gives the shipped weights."""
    out = tmp_path / "answer.json"
    result = _on_benchmark_corpora(tmp_path, "fit", str(QUESTIONS), "--out", str(out))
    assert result.exit_code == 0, result.output
    fitted, shipped = json.loads(out.read_text()), json.loads(SHIPPED_MODEL.read_text())
    assert fitted["fitted_on"]["questions"] == shipped["fitted_on"]["questions"]
    for part in ("ranker", "decider"):
        assert fitted[part]["features"] == shipped[part]["features"]
        # the same up to the last digits of floating-point arithmetic on another machine
        np.testing.assert_allclose(fitted[part]["coef"], shipped[part]["coef"], atol=1e-3)
    assert abs(fitted["decider"]["threshold"] - shipped["decider"]["threshold"]) < 0.01
    # leave one corpus out, on the indexes the fit just built
    result = _on_benchmark_corpora(
        tmp_path,
        "eval",
        str(QUESTIONS / "equity-guide"),
        str(QUESTIONS / "tts-handbook"),
        "--folds",
        "corpus",
    )
    assert result.exit_code == 0, result.output
    assert "leave one corpus out" in result.output
    assert "| equity-guide |" in result.output and "| mean |" in result.output
    assert "| near miss |" in result.output
    # the held-out sets, each asked of its corpus's index with the shipped model
    result = _on_benchmark_corpora(tmp_path, "eval", str(HELD_OUT / "tts-handbook"), "--per-corpus")
    assert result.exit_code == 0, result.output
    assert f"each corpus on its own index, model {shipped['version']}\n" in result.output
    assert "| tts-handbook | 280 |" in result.output and "in sample" not in result.output
    both = CliRunner().invoke(cli, ["eval", str(HELD_OUT), "--per-corpus", "--folds", "corpus"])
    assert both.exit_code == 2 and "--folds and --per-corpus exclude each other" in both.output


def test_explain_shows_each_stage_and_never_changes_the_answer(
    corpus_index: Index, embedder: Embedder
) -> None:
    question = "How much do AI engineers earn in the US?"
    plain = answer_question(corpus_index, embedder, question)
    explained = answer_question(corpus_index, embedder, question, explain=True)
    assert (plain.answer, plain.answered, plain.probability) == (
        explained.answer,
        explained.answered,
        explained.probability,
    )
    explain = explained.explain
    assert explain is not None and plain.explain is None
    assert explain["analysis"]["wants"] == "amount"
    assert explain["threshold"] == round(load_model().threshold, 4)
    assert explain["decided"].startswith("answered" if plain.answered else "declined")
    assert explain["candidates"] and "cosine" in explain["candidates"][0]["features"]


def test_a_filter_that_leaves_no_passage_declines_a_role_question(
    corpus_index: Index, embedder: Embedder
) -> None:
    """Once an IndexError (HTTP 500): a role question whose filter keeps no passage."""
    nothing = np.zeros(len(corpus_index.passages), dtype=bool)
    result = answer_question(
        corpus_index, embedder, "What skills does an MLOps engineer need?", allowed=nothing
    )
    assert not result.answered and result.citations == ()
    explained = answer_question(
        corpus_index, embedder, "What does a prompt engineer earn?", allowed=nothing, explain=True
    )
    assert explained.explain["decided"].startswith("retrieval")


def test_a_fold_model_records_only_the_corpora_it_was_fitted_on(
    corpus_index: Index, embedder: Embedder
) -> None:
    examples = collect(corpus_index, embedder, _sample("a") + _sample("b")[:30])
    model = model_from([e for e in examples if e.question.corpus == "a"])
    assert model.data["fitted_on"]["corpora"] == {"a": 45}


def _question_file(tmp_path: Path, corpus: str) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"id": "a", "question": "What is MLOps?", "answerable": True, "corpus": corpus})
        + "\n"
    )
    return path


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["fit"], "name the corpus 'nowhere' but {corpora}/nowhere is no folder"),
        (
            ["eval", "--folds", "corpus"],
            "name the corpus 'nowhere' but {corpora}/nowhere is no folder",
        ),
    ],
)
def test_a_corpus_without_its_folder_is_one_line_and_writes_nothing(
    tmp_path: Path, command: list[str], message: str
) -> None:
    corpora, out = tmp_path / "corpora", tmp_path / "model.json"
    corpora.mkdir()
    extra = ["--out", str(out)] if command == ["fit"] else []
    result = CliRunner().invoke(
        cli,
        [
            *command,
            str(_question_file(tmp_path, "nowhere")),
            "--corpora",
            str(corpora),
            "--cache",
            str(tmp_path / "cache"),
            *extra,
        ],
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: the question sets {message.format(corpora=corpora)}; "
        "pass --corpora with the folder that holds one folder per corpus"
    )
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_leaving_one_corpus_out_needs_two_corpora(tmp_path: Path) -> None:
    corpora = tmp_path / "corpora"
    (corpora / "only").mkdir(parents=True)
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            str(_question_file(tmp_path, "only")),
            "--folds",
            "corpus",
            "--corpora",
            str(corpora),
            "--cache",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: the question sets name 1 corpus (only); leaving one corpus out needs 2 or more"
    )
    assert not (tmp_path / "cache").exists()  # refused before any index was built


def test_a_missing_question_set_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["fit", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {tmp_path / 'none.jsonl'}: no such question set file or folder"
    )


def test_fitting_needs_questions_to_answer_and_to_decline(
    corpus_index: Index, embedder: Embedder
) -> None:
    answerable = [q for q in _sample() if q.answerable][:5]
    with pytest.raises(InputError, match="need both answerable and unanswerable questions"):
        fit_model(collect(corpus_index, embedder, answerable))


def test_eval_says_when_the_model_was_fitted_on_the_set(
    corpus_settings: Settings, corpus_index: Index
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            str(QUESTIONS / "ai-careers"),  # a folder: its files are what was fitted on
            "--index",
            str(corpus_settings.index_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "(in sample: the model was fitted on these questions)" in result.output


def test_no_phrase_of_a_question_set_spans_table_cells() -> None:
    """A passage reads a table row as "Header: value; Header: value", so a phrase copied
    across cells ("Japan | ¥9,943,766") matches nothing and marks a right answer wrong."""
    spanning = [
        (path.name, row["id"], phrase)
        for path in sorted([*QUESTIONS.rglob("*.jsonl"), *HELD_OUT.rglob("*.jsonl")])
        for row in map(json.loads, path.read_text(encoding="utf-8").splitlines())
        for phrase in [*row["evidence"], *row["answer_contains"]]
        if "|" in phrase
    ]
    assert spanning == []


def test_held_out_sets_are_valid_and_never_fitted_on() -> None:
    shipped = json.loads((ROOT / "rag" / "models" / "answer.json").read_text())
    sets = sorted(HELD_OUT.rglob("*.jsonl"))
    # every corpus has held-out questions
    assert {p.parent.name for p in sets} == set(shipped["fitted_on"]["corpora"])
    for path in sets:
        rows = load_questions(path, path.parent.name)
        assert len(rows) >= 60 and {r.corpus for r in rows} == {path.parent.name}
        assert not any(str(path.relative_to(ROOT)) in s for s in shipped["fitted_on"]["sources"])
