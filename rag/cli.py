"""CLI: `rag index`, `rag ask`, `rag eval`, `rag serve` and the corpus and operator commands."""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import Any

import click

from rag.errors import RagError
from rag.settings import Settings


def _fail_cleanly(command: Any) -> Any:
    """Turn the product's errors into one line on stderr and exit code 1."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RagError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; nothing was changed") from None

    return wrapper


def _settings(**overrides: Any) -> Settings:
    return Settings.from_env(**overrides)


@click.group()
def cli() -> None:
    """Career Q&A answered with the exact, cited sentences of the corpus articles.

    Settings come from RAG_* environment variables (see README) and the options.
    """


def _index_options(command: Any) -> Any:
    command = click.option(
        "--corpus",
        "corpus_dir",
        type=click.Path(path_type=Path),
        help="Corpus folder (default: corpus).",
    )(command)
    return click.option(
        "--index",
        "index_dir",
        type=click.Path(path_type=Path),
        help="Index folder (default: index).",
    )(command)


@cli.command("index")
@_index_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_fail_cleanly
def index_command(corpus_dir: Path | None, index_dir: Path | None, quiet: bool) -> None:
    """Rebuild the index from the corpus folder (unchanged passages reuse cached embeddings)."""
    from rag.index import build_index

    settings = _settings(corpus_dir=corpus_dir, index_dir=index_dir)
    summary = build_index(settings, progress=not quiet)
    click.echo(
        f"indexed {summary.articles} articles, {summary.sections} sections, "
        f"{summary.passages} passages ({summary.embedded} texts embedded) "
        f"in {summary.seconds:.1f} s -> {settings.index_dir}"
    )


def _load(settings: Settings) -> tuple[Any, Any]:
    """The index and the model, checking the index before spending time on the model."""
    from rag.embedding import Embedder
    from rag.index import load_index, read_manifest

    read_manifest(settings.index_dir)
    embedder = Embedder(settings.model)
    return load_index(settings, embedder), embedder


@cli.command("ask")
@click.argument("question")
@click.option("--top-k", type=click.IntRange(1, 20), default=5, show_default=True)
@click.option("--history", multiple=True, help="An earlier question (repeat, oldest first).")
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON.")
@click.option("--index", "index_dir", type=click.Path(path_type=Path))
@_fail_cleanly
def ask_command(
    question: str, top_k: int, history: tuple[str, ...], as_json: bool, index_dir: Path | None
) -> None:
    """Answer QUESTION with quoted, cited sentences."""
    from rag.answering import answer_question

    index, embedder = _load(_settings(index_dir=index_dir))
    result = answer_question(index, embedder, question, top_k=top_k, history=history)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
        return
    click.echo(result.answer)
    click.echo("\nSources:")
    for c in result.citations:
        mark = "*" if c.highlights else " "
        click.echo(f"{mark}[{c.n}] {c.article} › {c.section}\n     {c.url}")
    click.echo(f"\n({result.took_ms:.0f} ms)")


@cli.command("eval")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--k", "k", type=click.IntRange(1, 20), default=5, show_default=True)
@click.option("--compare", is_flag=True, help="Also score BM25 alone and dense alone.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write scores here.")
@click.option("--index", "index_dir", type=click.Path(path_type=Path))
@_fail_cleanly
def eval_command(
    file: Path, k: int, compare: bool, json_out: Path | None, index_dir: Path | None
) -> None:
    """Score a question set (JSON lines): evidence hit@k, MRR, answers, abstains, latency."""
    from rag.evaluation import evaluate, load_questions, scores_json, scores_table

    questions = load_questions(file)
    index, embedder = _load(_settings(index_dir=index_dir))
    modes = ("bm25", "dense", "hybrid") if compare else ("hybrid",)
    all_scores, all_rows = [], []
    for mode in modes:
        scores, rows = evaluate(index, embedder, questions, k=k, mode=mode)
        all_scores.append(scores)
        all_rows.extend(rows)
    click.echo(f"{len(questions)} questions, k={k}\n")
    click.echo(scores_table(all_scores))
    if json_out:
        json_out.write_text(scores_json(all_scores, all_rows))


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes, each loading the index read-only.",
)
@_fail_cleanly
def serve_command(host: str, port: int, workers: int) -> None:
    """Serve the chat page and the JSON API with uvicorn."""
    import uvicorn

    _settings()  # check the environment's settings before starting workers
    uvicorn.run(
        "web.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )


def main() -> None:
    cli(prog_name="rag")


if __name__ == "__main__":
    sys.exit(main())
