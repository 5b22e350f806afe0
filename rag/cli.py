"""CLI: `rag index`, `rag ask`, `rag eval`, `rag serve` and the corpus and operator commands."""

from __future__ import annotations

import json
import signal
import sys
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rag.errors import RagError
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.scoring import AnswerModel


def _fail_cleanly(command: Any) -> Any:
    """Turn the product's errors, and the file system's, into one line on stderr and exit 1.

    SIGTERM is treated like Ctrl-C, so an interrupted build cleans up after itself.
    """

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rag.files import storage_error

        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return command(*args, **kwargs)
        except RagError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(str(storage_error(exc, "stopped"))) from None
        except KeyboardInterrupt:
            raise click.ClickException(
                "interrupted; the index in use and the corpus folder were left as they were"
            ) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _note(message: str) -> None:
    """Progress of a build, on stderr so that stdout keeps only the result."""
    click.echo(message, err=True)


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
@click.option(
    "--if-needed",
    is_flag=True,
    help="Do nothing when the index is current (same corpus files, settings and format).",
)
@click.option(
    "--worker",
    is_flag=True,
    help="Build nothing: embed the texts that builds on any machine queued in the database "
    "(RAG_DATABASE_URL), batch by batch, until none is left.",
)
@click.option("--wait", is_flag=True, help="With --worker: keep waiting for new texts.")
@click.option(
    "--batch",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="With --worker: texts taken (and held) at once.",
)
@click.option(
    "--no-embed",
    is_flag=True,
    help="With RAG_DATABASE_URL: queue the new texts and wait for workers to embed them.",
)
@_fail_cleanly
def index_command(
    corpus_dir: Path | None,
    index_dir: Path | None,
    quiet: bool,
    if_needed: bool,
    worker: bool,
    wait: bool,
    batch: int,
    no_embed: bool,
) -> None:
    """Rebuild the index from the corpus folder (unchanged passages reuse cached embeddings).

    With RAG_DATABASE_URL the embedding cache is shared: texts no machine has embedded
    are queued, and `rag index --worker` processes anywhere help embed them.
    """
    from rag.corpus import finish_interrupted
    from rag.index import build_index, build_lock, index_is_current

    settings = _settings(corpus_dir=corpus_dir, index_dir=index_dir)
    if (worker or no_embed) and not settings.database_url:
        option = "--worker" if worker else "--no-embed"
        raise click.ClickException(f"{option} needs RAG_DATABASE_URL: workers share a database")
    if (wait or batch != 64) and not worker:
        raise click.ClickException("--wait and --batch go with --worker")
    if worker:
        if no_embed or if_needed:
            raise click.ClickException("--worker builds nothing: drop --no-embed and --if-needed")
        from rag.embedcache import run_worker

        try:
            count = run_worker(settings, batch=batch, wait=wait, report=_note)
        except KeyboardInterrupt:
            raise click.ClickException(
                "interrupted; the texts in hand stay queued for another worker"
            ) from None
        click.echo(f"embedded {count} texts; none left to take")
        return
    with build_lock(settings, waiting=_note):
        finish_interrupted(settings)
        if if_needed and index_is_current(settings):
            click.echo(
                f"the index at {settings.index_dir} is up to date with {settings.corpus_dir}"
            )
            return
        summary = build_index(
            settings, progress=not quiet, report=None if quiet else _note, embed=not no_embed
        )
    click.echo(
        f"indexed {summary.articles} articles, {summary.sections} sections, "
        f"{summary.passages} passages ({summary.embedded} texts embedded) "
        f"in {summary.seconds:.1f} s -> {settings.index_dir}"
    )


def _load(settings: Settings) -> tuple[Any, Any]:
    """The index and its question encoder (PyTorch only for an index built without one)."""
    from rag.embedding import Embedder
    from rag.encoder import index_encoder
    from rag.index import load_index, read_manifest
    from rag.retrieval import use_one_thread

    use_one_thread()
    # A database's index is checked as it loads; its encoder is this machine's export.
    manifest = {} if settings.database_url else read_manifest(settings.index_dir)
    if settings.database_url or "question_encoder" in manifest:
        index = load_index(settings)
        return index, index_encoder(settings, index)
    embedder = Embedder(settings.model, onnx_dir=settings.model_cache_dir)
    return load_index(settings, embedder), embedder


@cli.command("ask")
@click.argument("question")
@click.option("--top-k", type=click.IntRange(1, 20), default=5, show_default=True)
@click.option("--history", multiple=True, help="An earlier question (repeat, oldest first).")
@click.option(
    "--article",
    "articles",
    multiple=True,
    help="Only quote this article, by URL or slug (repeat for several; see `rag list`).",
)
@click.option("--after", help="Only articles published on or after this day (YYYY-MM-DD).")
@click.option("--before", help="Only articles published on or before this day (YYYY-MM-DD).")
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON.")
@click.option(
    "--explain",
    is_flag=True,
    help="Also show the question analysis, the top candidates and why the model decided.",
)
@click.option("--index", "index_dir", type=click.Path(path_type=Path))
@_fail_cleanly
def ask_command(
    question: str,
    top_k: int,
    history: tuple[str, ...],
    articles: tuple[str, ...],
    after: str | None,
    before: str | None,
    as_json: bool,
    explain: bool,
    index_dir: Path | None,
) -> None:
    """Answer QUESTION with quoted, cited sentences."""
    from datetime import date

    from rag.answering import answer_question
    from rag.retrieval import passage_filter

    def day(option: str, value: str | None) -> date | None:
        try:
            return date.fromisoformat(value) if value is not None else None
        except ValueError:
            raise click.ClickException(
                f"{option} must be a day as YYYY-MM-DD, not {value!r}"
            ) from None

    published_after, published_before = day("--after", after), day("--before", before)
    if published_after and published_before and published_after > published_before:
        raise click.ClickException(f"--after {after} is later than --before {before}")
    index, embedder = _load(_settings(index_dir=index_dir))
    allowed = passage_filter(
        index,
        articles=articles,
        published_after=published_after,
        published_before=published_before,
    )
    result = answer_question(
        index, embedder, question, top_k=top_k, history=history, allowed=allowed, explain=explain
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
        return
    click.echo(result.answer)
    click.echo("\nSources:")
    for c in result.citations:
        mark = "*" if c.highlights else " "
        click.echo(f"{mark}[{c.n}] {c.article} › {c.section}\n     {c.url}")
    click.echo(f"\n({result.took_ms:.0f} ms, P(answered) {result.probability:.2f}, {result.model})")
    if explain and result.explain:
        _echo_explain(result.explain)


def _echo_explain(explain: dict) -> None:
    click.echo(f"\nDecided: {explain['decided']}")
    click.echo("Analysis: " + json.dumps(explain["analysis"], ensure_ascii=False))
    click.echo("Evidence: " + json.dumps(explain["evidence"]))
    click.echo("Top candidates:")
    for n, candidate in enumerate(explain["candidates"], start=1):
        text = " ".join(candidate["text"].split())
        click.echo(f"  {n}. {candidate['score']:+.3f}  {text[:110]}")
        features = ", ".join(f"{k}={v:g}" for k, v in candidate["features"].items() if v)
        click.echo(f"     {features}")


_CORPORA = Path("benchmarks/corpora")
_CORPORA_CACHE = Path(".cache/corpora")


def _corpora_options(command: Any) -> Any:
    command = click.option(
        "--corpora",
        type=click.Path(path_type=Path, file_okay=False),
        default=_CORPORA,
        show_default=True,
        help="Folder with one corpus folder per corpus the question sets name.",
    )(command)
    return click.option(
        "--cache",
        type=click.Path(path_type=Path, file_okay=False),
        default=_CORPORA_CACHE,
        show_default=True,
        help="Where those corpora's indexes are built and kept.",
    )(command)


@cli.command("eval")
@click.argument("sets", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--k", "k", type=click.IntRange(1, 20), default=5, show_default=True)
@click.option(
    "--folds",
    type=click.Choice(["corpus"]),
    help="Leave one corpus out: fit on the others, score it, for each corpus in turn.",
)
@click.option(
    "--per-corpus",
    is_flag=True,
    help="Ask each corpus's questions of that corpus's index, with the shipped model "
    "(or --model): for held-out sets the model was never fitted on.",
)
@click.option("--compare", is_flag=True, help="Also score BM25 alone and dense alone.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), help="Answer model file.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write scores here.")
@click.option("--index", "index_dir", type=click.Path(path_type=Path))
@_corpora_options
@_fail_cleanly
def eval_command(
    sets: tuple[Path, ...],
    k: int,
    folds: str | None,
    per_corpus: bool,
    compare: bool,
    model_path: Path | None,
    json_out: Path | None,
    index_dir: Path | None,
    corpora: Path,
    cache: Path,
) -> None:
    """Score question sets (JSON lines, files or folders): evidence hit@k, MRR, answers,
    abstains, latency.

    Without --folds the sets are asked of the index (default: the product's) with the
    shipped model: figures on sets the model was fitted on are in sample.
    """
    from rag.evaluation import (
        by_corpus,
        cross_corpus,
        evaluate,
        follow_up_retrieval,
        scores_json,
        scores_table,
        types_table,
    )
    from rag.questionsets import load_questions, set_files
    from rag.scoring import load_model

    if folds and per_corpus:
        raise click.UsageError("--folds and --per-corpus exclude each other; give one")
    if folds or per_corpus:
        from rag.embedding import Embedder
        from rag.fitting import corpus_questions, load_corpora
        from rag.retrieval import use_one_thread

        questions_by_corpus = corpus_questions(list(sets), corpora, minimum=2 if folds else 1)
        settings = _settings()
        use_one_thread()
        embedder = Embedder(settings.model, onnx_dir=settings.model_cache_dir)
        loaded = load_corpora(questions_by_corpus, corpora, cache, settings, embedder)
        if folds:
            rows = cross_corpus(loaded, embedder, k=k)
            how = "leave one corpus out (out of fold)"
        else:
            model = load_model(model_path)
            rows = [
                row
                for index, questions in loaded.values()
                for row in evaluate(index, embedder, questions, k=k, model=model)[1]
            ]
            inside = _fitted_on(model, set_files(list(sets)))
            how = f"each corpus on its own index, model {model.version}" + (
                " (in sample: the model was fitted on some of these questions)" if inside else ""
            )
        all_scores = by_corpus(rows)
        click.echo(f"{len(rows)} questions, k={k}, {how}\n")
        click.echo(scores_table(all_scores, targets=True))
        click.echo("\nBy question type, all corpora:\n")
        click.echo(types_table(rows))
        count, as_answered, joined = follow_up_retrieval(loaded, embedder, rows, k=k)
        click.echo(
            f"\nFollow-ups ({count} answerable), evidence hit@{k}: {as_answered:.3f} as "
            f"answered, {joined:.3f} searching the joined conversation"
        )
    else:
        model = load_model(model_path)
        files = set_files(list(sets))
        questions = [q for path in files for q in load_questions(path)]
        index, embedder = _load(_settings(index_dir=index_dir))
        modes = ("bm25", "dense", "hybrid") if compare else ("hybrid",)
        all_scores, rows = [], []
        for mode in modes:
            scores, mode_rows = evaluate(index, embedder, questions, k=k, mode=mode, model=model)
            all_scores.append(scores)
            rows.extend(mode_rows)
        inside = _fitted_on(model, files)
        label = " (in sample: the model was fitted on these questions)" if inside else ""
        click.echo(f"{len(questions)} questions, k={k}, model {model.version}{label}\n")
        click.echo(scores_table(all_scores))
    if json_out:
        json_out.write_text(scores_json(all_scores, rows))


def _fitted_on(model: AnswerModel, files: list[Path]) -> bool:
    """Whether the model was fitted on any of the question set files (by folder and name)."""
    fitted = {Path(f).parts[-2:] for f in model.data.get("fitted_on", {}).get("sources", [])}
    return any(f.parts[-2:] in fitted for f in files)


@cli.command("fit")
@click.argument("sets", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("rag/models/answer.json"),
    show_default=True,
    help="Where to write the answer model.",
)
@click.option("--k", "k", type=click.IntRange(1, 20), default=5, show_default=True)
@_corpora_options
@_fail_cleanly
def fit_command(sets: tuple[Path, ...], out: Path, k: int, corpora: Path, cache: Path) -> None:
    """Fit the answer model on question sets (files or folders) over their corpora."""
    from rag.embedding import Embedder
    from rag.fitting import collect, corpus_questions, fit_model, load_corpora, write_model
    from rag.questionsets import set_files
    from rag.retrieval import use_one_thread

    questions_by_corpus = corpus_questions(list(sets), corpora)
    settings = _settings()
    use_one_thread()
    embedder = Embedder(settings.model, onnx_dir=settings.model_cache_dir)
    loaded = load_corpora(questions_by_corpus, corpora, cache, settings, embedder, progress=True)
    examples = [e for index, qs in loaded.values() for e in collect(index, embedder, qs, top_k=k)]
    sources = [str(p) for p in set_files(list(sets))]
    data = fit_model(examples, sources=sources)
    write_model(data, out)
    oof = data["out_of_fold"]
    click.echo(
        f"fitted {data['version']} on {len(examples)} questions of {len(loaded)} corpora "
        f"-> {out} (out of fold: false decline {oof['false_decline']:.3f}, "
        f"unanswerable declined {oof['decline_of_unanswerable']:.3f})"
    )


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
    from web.serve import serve

    # Checked here, before any worker starts; each worker reads the same environment.
    serve(_settings(), host, port, workers)


def _data_option(command: Any) -> Any:
    return click.option(
        "--data",
        "data_dir",
        type=click.Path(path_type=Path),
        help="Data folder: feedback and API keys unless RAG_DATABASE_URL is set (default: data).",
    )(command)


def _echo_rebuilt(settings: Settings, change: Any, summary: Any) -> None:
    """Print what a corpus change did and the rebuilt index's summary."""
    for article in change.removed:
        click.echo(f"removed {article.title!r} ({article.slug}, from {article.source})")
    for article in change.added:
        click.echo(f"added {article.title!r} ({article.slug}, from {article.source})")
    click.echo(
        f"indexed {summary.articles} articles, {summary.passages} passages "
        f"({summary.embedded} new texts embedded) in {summary.seconds:.1f} s -> "
        f"{settings.index_dir}"
    )


def _unchanged(exc: RagError) -> RagError:
    from rag.errors import StorageError

    if isinstance(exc, StorageError) or "nothing" in str(exc):
        return exc  # it already says what it left behind
    return RagError(f"{exc}; nothing changed")


@cli.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@_index_options
@_fail_cleanly
def add_command(paths: tuple[Path, ...], corpus_dir: Path | None, index_dir: Path | None) -> None:
    """Add feeds, HTML pages or Markdown files to the corpus and rebuild the index.

    A file that does not read, or brings an article already in the corpus,
    changes nothing; nor does a failed or interrupted rebuild: the files join
    the corpus folder only once the new index is in place.
    """
    from rag.corpus import add_articles

    settings = _settings(corpus_dir=corpus_dir, index_dir=index_dir)
    try:
        change, summary = add_articles(settings, list(paths), report=_note)
    except RagError as exc:
        raise _unchanged(exc) from None
    _echo_rebuilt(settings, change, summary)


@cli.command("remove")
@click.argument("article")
@_index_options
@_fail_cleanly
def remove_command(article: str, corpus_dir: Path | None, index_dir: Path | None) -> None:
    """Remove ARTICLE (its URL or slug, see `rag list`) from the corpus and rebuild the index."""
    from rag.corpus import remove_article

    settings = _settings(corpus_dir=corpus_dir, index_dir=index_dir)
    try:
        change, summary = remove_article(settings, article, report=_note)
    except RagError as exc:
        raise _unchanged(exc) from None
    _echo_rebuilt(settings, change, summary)


@cli.command("list")
@click.option("--index", "index_dir", type=click.Path(path_type=Path))
@_fail_cleanly
def list_command(index_dir: Path | None) -> None:
    """The indexed articles with their dates and passage counts."""
    from rag.corpus import list_articles

    articles = list_articles(_settings(index_dir=index_dir))
    width = max(len("SLUG"), *(len(a.slug) for a in articles))
    click.echo(f"{'PUBLISHED':<10}  {'PASSAGES':>8}  {'SLUG':<{width}}  TITLE")
    for a in articles:
        published = (a.published or "-")[:10]
        click.echo(f"{published:<10}  {a.passages:>8}  {a.slug:<{width}}  {a.title}")
    click.echo(f"{len(articles)} articles, {sum(a.passages for a in articles)} passages")


@cli.group("feedback")
def feedback_group() -> None:
    """Readers' feedback on answers: export it, or see which articles help least."""


@feedback_group.command("export")
@click.option(
    "--format", "format_", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File to write (default: standard output).",
)
@_data_option
@_fail_cleanly
def feedback_export_command(format_: str, output: Path | None, data_dir: Path | None) -> None:
    """Every feedback, oldest first, as CSV or JSON lines."""
    from rag.feedback import export_feedback

    settings = _settings(data_dir=data_dir)
    if output is None:
        export_feedback(settings, format_, sys.stdout)  # type: ignore[arg-type]
        return
    try:
        with output.open("w", encoding="utf-8", newline="") as out:
            count = export_feedback(settings, format_, out)  # type: ignore[arg-type]
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"exported {count} feedback to {output}", err=True)


@feedback_group.command("stats")
@_data_option
@_fail_cleanly
def feedback_stats_command(data_dir: Path | None) -> None:
    """Helpful rate by article and by section, worst first."""
    from rag.feedback import feedback_stats

    stats = feedback_stats(_settings(data_dir=data_dir))
    if not stats.votes:
        click.echo("no feedback yet")
        return
    rate = stats.helpful / stats.votes
    click.echo(f"{stats.votes} feedback, {stats.helpful} helpful ({rate:.0%})")
    for heading, rates in (("article", stats.by_article), ("section", stats.by_section)):
        click.echo(f"\nBy {heading}, worst first:\n{'HELPFUL':>7}  {'VOTES':>5}  {heading.upper()}")
        for r in rates:
            name = r.article if r.section is None else f"{r.article} › {r.section}"
            click.echo(f"{r.rate:>7.0%}  {r.votes:>5}  {name}")


@cli.group("keys")
def keys_group() -> None:
    """API keys: once one exists, the JSON API asks for a key with every request."""


@keys_group.command("create")
@click.argument("name")
@_data_option
@_fail_cleanly
def keys_create_command(name: str, data_dir: Path | None) -> None:
    """Make a key called NAME and print it."""
    from rag.keys import create_key

    click.echo(create_key(_settings(data_dir=data_dir), name))
    click.echo(f"created key {name!r}: store it now, it won't be shown again", err=True)


@keys_group.command("list")
@_data_option
@_fail_cleanly
def keys_list_command(data_dir: Path | None) -> None:
    """The keys' names and creation times (never the keys)."""
    from rag.keys import keys_enabled, list_keys

    settings = _settings(data_dir=data_dir)
    if not keys_enabled(settings):
        click.echo("API keys are off: the API is open; `rag keys create NAME` turns them on")
        return
    keys = list_keys(settings)
    if not keys:
        click.echo("no keys: the API refuses every request until a key is created")
        return
    width = max(len("NAME"), *(len(k.name) for k in keys))
    click.echo(f"{'NAME':<{width}}  CREATED")
    for k in keys:
        click.echo(f"{k.name:<{width}}  {k.created}")


@keys_group.command("revoke")
@click.argument("name")
@_data_option
@_fail_cleanly
def keys_revoke_command(name: str, data_dir: Path | None) -> None:
    """Revoke the key called NAME; requests with it are refused from now on."""
    from rag.keys import keys_off_hint, list_keys, revoke_key

    settings = _settings(data_dir=data_dir)
    revoke_key(settings, name)
    click.echo(f"revoked {name}")
    if not list_keys(settings):
        click.echo(
            f"no keys left: the API refuses every request until a key is created "
            f"({keys_off_hint(settings)})"
        )


def main() -> None:
    cli(prog_name="rag")


if __name__ == "__main__":
    sys.exit(main())
