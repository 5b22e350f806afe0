"""Answers on the real index: evidence at rank, verbatim quotes, citations, declines, follow-ups."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rag.analysis import analyse, is_follow_up
from rag.answering import Answer, answer_question, find_candidates
from rag.cli import cli
from rag.embedding import Embedder
from rag.errors import InputError
from rag.evaluation import contains_any
from rag.index import Index
from rag.settings import Settings
from rag.tokens import correct_spelling

ENGINEER_REPORT = "https://blog.9cv9.com/the-2025-ai-engineer-career-report-a-data-driven-analysis/"
SHORTAGE = "https://blog.9cv9.com/solving-the-ai-talent-shortage-innovative-strategies-for-hiring-ai-experts/"


@pytest.fixture(scope="session")
def corpus_index(any_corpus_index: Index) -> Index:
    """Every answer test runs on the file store and on PostgreSQL: the answers must agree."""
    return any_corpus_index


def ask(index: Index, embedder: Embedder, question: str, **kwargs: object) -> Answer:
    return answer_question(index, embedder, question, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("question", "section", "expected"),
    [
        (
            "What is the median base salary of AI engineers in the US?",
            "How much does an AI Engineer earn in 2025?",
            "$160,000",
        ),
        (
            "What are the main causes of the AI talent shortage?",
            "talent shortage",
            "rapid AI adoption",
        ),
        ("Which programming languages should an AI engineer learn?", "", "Python"),
    ],
)
def test_questions_find_their_section_and_quote_the_answer(
    corpus_index: Index, embedder: Embedder, question: str, section: str, expected: str
) -> None:
    result = ask(corpus_index, embedder, question)
    assert result.answered, result.answer
    assert contains_any(result.answer, (expected,)), result.answer
    assert section.lower() in result.citations[0].section.lower()
    assert result.citations[0].highlights


def test_every_quoted_sentence_is_in_its_cited_passage(
    corpus_index: Index, embedder: Embedder
) -> None:
    for question in (
        "How much do AI architects earn in San Francisco?",
        "What does an AI ethics officer earn?",
        "What certifications help AI architects?",
    ):
        result = ask(corpus_index, embedder, question, top_k=7)
        assert len(result.citations) == 7
        assert [c.n for c in result.citations] == list(range(1, 8))
        quoted = []
        for citation in result.citations:
            assert citation.url.startswith(("https://blog.9cv9.com/",)) and "#" in citation.url
            for start, end in citation.highlights:
                sentence = citation.text[start:end]
                assert sentence and sentence == sentence.strip()
                assert f"{sentence} [{citation.n}]" in result.answer
                quoted.append(sentence)
        # the answer is nothing but quoted sentences and their markers
        rebuilt = result.answer
        for citation in result.citations:
            for start, end in citation.highlights:
                rebuilt = rebuilt.replace(f"{citation.text[start:end]} [{citation.n}]", "", 1)
        assert rebuilt.strip() == "", rebuilt
        # citations used by the answer come first
        used = [bool(c.highlights) for c in result.citations]
        assert used == sorted(used, reverse=True)


@pytest.mark.parametrize(
    "question",
    [
        "How do I bake sourdough bread?",
        "Who won the football world cup in 2022?",
        "What is the capital of Peru?",
        "How much do nurses earn in Norway?",
        "How much do dentists earn?",  # only its frame ("how much ... earn") is in the articles
    ],
)
def test_off_topic_questions_are_declined_with_the_closest_passages(
    corpus_index: Index, embedder: Embedder, question: str
) -> None:
    result = ask(corpus_index, embedder, question)
    assert not result.answered
    assert result.answer.startswith("The articles don't")
    assert len(result.citations) == 5
    assert all(not c.highlights for c in result.citations)


def test_unknown_words_that_carry_the_question_move_its_meaning(
    corpus_index: Index, embedder: Embedder
) -> None:
    """Words no article uses weigh as evidence by how much of the question they carry:
    a profession the articles never name moves it far, casual filler barely."""

    def moved(question: str) -> float:
        analysed, _, _ = find_candidates(corpus_index, embedder, question, [], top_k=5)
        return analysed.unknown_meaning

    assert moved("What skills does an AI engineer need?") == 0.0  # every word is known
    filler = moved("what skills does an AI engineer need lol")
    assert 0.0 < filler < moved("What skills does a pastry chef need?")


@pytest.mark.parametrize(
    "question",
    [
        "How much is the exam fee for the CertNexus CAIP?",  # no fee is given
        "ai architect pay in south africa",  # a place named only in lower case
    ],
)
def test_near_misses_are_declined(corpus_index: Index, embedder: Embedder, question: str) -> None:
    """On topic, but asking for a figure or a role the articles never give: no nearby quote."""
    result = ask(corpus_index, embedder, question)
    assert not result.answered, result.answer
    assert result.answer.startswith("The articles don't")
    assert len(result.citations) == 5


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How much does the Google machine learning exam cost?", "$200"),
        ("How many weeks does the MIT Sloan AI course take?", "6 weeks"),
        ("What does a network architect focus on compared with an AI architect?", "connectivity"),
        # a list question takes the list after its introduction
        ("Which prerequisites are suggested before taking CAIP?", "Python Programming"),
        ("Which tools do AI architects use for containerization?", "Docker and Kubernetes"),
    ],
)
def test_figure_and_role_questions_quote_the_figure_or_role(
    corpus_index: Index, embedder: Embedder, question: str, expected: str
) -> None:
    result = ask(corpus_index, embedder, question)
    assert result.answered, result.answer
    assert contains_any(result.answer, (expected,)), result.answer


def test_misspelled_words_are_searched_as_the_articles_spell_them(
    corpus_index: Index, embedder: Embedder
) -> None:
    result = ask(corpus_index, embedder, "How much does the Gogle machine lerning exam cost?")
    assert result.answered and "$200" in result.answer, result.answer
    assert result.question == "How much does the Gogle machine lerning exam cost?"
    # a place the articles never name is not "corrected" into one they do
    named = analyse("How much do AI engeneers earn in Swedan?", (), corpus_index)
    assert named.text == "How much do AI engineers earn in Swedan?"
    assert named.unknown_names == ("Swedan",)


@pytest.mark.parametrize(
    ("missing", "covered"),
    [
        # a place no article names, against one they give salaries for
        ("How much do AI engineers earn in Swedan?", "How much do AI engineers earn in Europe?"),
        # a role the articles never pay, against the one they do
        (
            "What is the salary of a prompt engineer in the US?",
            "What is the salary of an AI engineer in the US?",
        ),
    ],
)
def test_what_the_articles_lack_lowers_the_probability_of_answering(
    corpus_index: Index, embedder: Embedder, missing: str, covered: str
) -> None:
    """The unknown place or the missed role is evidence the model weighs: the same question
    about what the articles do cover is more likely to be answered. (Whether it tips the
    decision is the fitted model's call; `rag eval --folds corpus` measures how often.)"""
    lacking, answered = ask(corpus_index, embedder, missing), ask(corpus_index, embedder, covered)
    assert answered.answered, answered.answer
    assert lacking.probability < answered.probability, (lacking, answered)


def test_spelling_correction_keeps_known_words_and_case() -> None:
    known = frozenset({"salary", "engineer", "europe", "interview"})
    choices = tuple(sorted(known))
    assert correct_spelling("Engeneer salry interveiw", known, choices) == (
        "Engineer salary interview"
    )
    assert correct_spelling("Europe, Sweden, AI", known, choices) == "Europe, Sweden, AI"


def test_a_follow_up_is_resolved_against_the_earlier_question(
    corpus_index: Index, embedder: Embedder
) -> None:
    first = "What skills do AI engineers need?"
    follow_up = ask(corpus_index, embedder, "what about architects?", history=[first])
    assert follow_up.answered
    assert "Architect" in follow_up.answer
    assert (
        "architect"
        in follow_up.citations[0].section.lower() + follow_up.citations[0].article.lower()
    )
    alone = ask(corpus_index, embedder, "what about architects?")
    assert alone.answer != follow_up.answer


def test_follow_up_detection(corpus_index: Index) -> None:
    history = ["How much do AI engineers earn in the US?"]
    follow = analyse("and in Europe?", history, corpus_index)
    assert follow.follow_up and follow.inherited == history[0]
    assert "US" in follow.replaced and "US" not in follow.search_text
    assert follow.search_text.endswith("and in Europe?")
    # a complete question of two content words is not merged with the one before it
    for complete in ("What is MLOps?", "Which certifications are worth it for cloud engineers?"):
        alone = analyse(complete, history, corpus_index)
        assert not alone.follow_up and alone.search_text == complete
    assert not is_follow_up("and in Europe?", has_history=False)


@pytest.mark.parametrize(
    ("question", "message"), [("   ", "empty"), ("x" * 1001, "keep it to 1000 characters")]
)
def test_bad_questions_raise(
    corpus_index: Index, embedder: Embedder, question: str, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        ask(corpus_index, embedder, question)


def test_filters_keep_to_the_chosen_articles(corpus_index: Index, embedder: Embedder) -> None:
    from rag.retrieval import passage_filter

    allowed = passage_filter(
        corpus_index,
        articles=["solving-the-ai-talent-shortage-innovative-strategies-for-hiring-ai-experts"],
    )
    result = ask(corpus_index, embedder, "How much do AI engineers earn?", allowed=allowed)
    assert len(result.citations) == 5
    assert {c.url.split("#")[0] for c in result.citations} == {SHORTAGE}
    with pytest.raises(InputError, match="articles: no indexed article"):
        passage_filter(corpus_index, articles=["no-such-article"])


def test_rag_ask_prints_answer_sources_and_json(
    corpus_settings: Settings, corpus_index: Index
) -> None:
    runner = CliRunner()
    index = ["--index", str(corpus_settings.index_dir)]
    result = runner.invoke(cli, ["ask", "What is MLOps?", *index])
    assert result.exit_code == 0, result.output
    assert "Sources:" in result.output and "[1]" in result.output
    result = runner.invoke(cli, ["ask", "What is MLOps?", "--json", "--top-k", "3", *index])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert set(body) == {
        "question",
        "answered",
        "answer",
        "quotes",
        "citations",
        "took_ms",
        "probability",
        "model",
    }
    assert len(body["citations"]) == 3
    assert set(body["citations"][0]) == {
        "n",
        "passage_id",
        "article",
        "section",
        "url",
        "text",
        "score",
        "highlights",
    }


def test_rag_ask_without_an_index_says_to_build_one(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["ask", "What is MLOps?", "--index", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: no index at {tmp_path / 'none'}; run `rag index` to build it"
    )


def test_rag_eval_scores_a_question_set(
    corpus_settings: Settings, corpus_index: Index, tmp_path
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps(
            {
                "id": "a",
                "question": "What is MLOps?",
                "answerable": True,
                "evidence": ["MLOps"],
                "answer_contains": ["MLOps"],
            }
        )
        + "\n"
        + json.dumps({"id": "b", "question": "How do I bake bread?", "answerable": False})
        + "\n"
    )
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            str(questions),
            "--compare",
            "--json",
            str(out),
            "--index",
            str(corpus_settings.index_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())["scores"]
    assert [s["name"] for s in scores] == ["bm25", "dense", "hybrid"]
    hybrid = scores[-1]
    assert (hybrid["evidence_hit"], hybrid["answer_hit"], hybrid["abstain_accuracy"]) == (
        1.0,
        1.0,
        1.0,
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    result = CliRunner().invoke(cli, ["eval", str(bad), "--index", str(corpus_settings.index_dir)])
    assert result.exit_code == 1 and "bad.jsonl:1: not a question object" in result.output
