"""Int8 question encoding: answer quality (leave one corpus out) and latency, float against int8.

The exported question encoder is quantized with ONNX Runtime's
``quantize_dynamic`` (int8 weights, activations quantized on the fly); the
passages and sentences stay float, as built. Every question set under
``benchmarks/questions/`` is answered out of fold (`rag eval --folds corpus`'s
procedure: fit on three corpora, answer the fourth) once with each question
encoder; the corpora's indexes are built under ``.cache/corpora/`` when
missing. Latency is the question encoding alone, one thread, dev questions x 5.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, dev_questions, machine, percentiles, table, write_results
from rag.embedding import Embedder
from rag.encoder import ENCODER_DIR, NETWORK, TOKENIZER, QuestionEncoder, load_question_encoder
from rag.evaluation import by_corpus, cross_corpus
from rag.fitting import corpus_questions, load_corpora
from rag.retrieval import use_one_thread
from rag.settings import Settings

QUESTIONS = ROOT / "benchmarks" / "questions"
CORPORA = ROOT / "benchmarks" / "corpora"
CACHE = ROOT / ".cache" / "corpora"
TOLERANCE = 0.005


def quantized(float_encoder_dir: Path, description: dict, scratch: Path) -> QuestionEncoder:
    """An int8 copy of the exported encoder in ``scratch``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(float_encoder_dir / NETWORK, scratch / NETWORK, weight_type=QuantType.QInt8)
    shutil.copyfile(float_encoder_dir / TOKENIZER, scratch / TOKENIZER)
    return QuestionEncoder(scratch, description)


def encoding_ms(encoder: QuestionEncoder, questions: list[str], rounds: int = 5) -> dict:
    for question in questions:
        encoder.encode_query(question)
    took = []
    for _ in range(rounds):
        for question in questions:
            started = time.perf_counter()
            encoder.encode_query(question)
            took.append((time.perf_counter() - started) * 1000)
    return percentiles(took, digits=2)


def run() -> dict:
    settings = Settings.from_env()
    use_one_thread()
    embedder = Embedder(settings.model)  # builds the corpora's indexes when they are missing
    asked = corpus_questions([QUESTIONS], CORPORA, minimum=2)
    loaded = load_corpora(asked, CORPORA, CACHE, settings, embedder, progress=True)
    first = next(iter(loaded.values()))[0]
    float_encoder = load_question_encoder(first.path, first.manifest)
    record = first.manifest["question_encoder"]
    questions = dev_questions()
    results: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory() as scratch:
        int8_encoder = quantized(first.path / ENCODER_DIR, record, Path(scratch))
        results["bytes"] = {
            "float": (first.path / ENCODER_DIR / NETWORK).stat().st_size,
            "int8": (Path(scratch) / NETWORK).stat().st_size,
        }
        texts = questions + [q.question for _, qs in loaded.values() for q in qs]
        cosines = (float_encoder.encode(texts) * int8_encoder.encode(texts)).sum(axis=1)
        results["cosine_float_int8"] = {
            "min": round(float(cosines.min()), 4),
            "mean": round(float(cosines.mean()), 4),
        }
        for name, encoder in (("float", float_encoder), ("int8", int8_encoder)):
            rows = cross_corpus(loaded, encoder, k=5)
            results[name] = {
                "sets": {
                    s.name: {"evidence_hit_at_5": s.evidence_hit, "answer_hit": s.answer_hit}
                    for s in by_corpus(rows)
                },
                "encoding_ms": encoding_ms(encoder, questions),
            }
            print(name, json.dumps(results[name]), flush=True)
    results["within_tolerance"] = all(
        abs(results["int8"]["sets"][n][m] - results["float"]["sets"][n][m]) <= TOLERANCE
        for n in results["float"]["sets"]
        for m in ("evidence_hit_at_5", "answer_hit")
    )
    return results


def quantize_table(results: dict) -> str:
    rows = []
    for name, floats in results["float"]["sets"].items():
        int8 = results["int8"]["sets"][name]
        rows.append(
            [
                name,
                floats["evidence_hit_at_5"],
                int8["evidence_hit_at_5"],
                floats["answer_hit"],
                int8["answer_hit"],
            ]
        )
    return table(
        "Question encoder float against int8 (out of fold, passages float)",
        ["set", "evidence@5 float", "evidence@5 int8", "answer hit float", "answer hit int8"],
        rows,
    )


def main() -> None:
    results = run()
    path = write_results("quantize.json", results)
    print(quantize_table(results))
    ms = {n: results[n]["encoding_ms"] for n in ("float", "int8")}
    print(f"\nencoding ms, one thread: float {ms['float']}, int8 {ms['int8']}")
    print(f"cosine float/int8: {results['cosine_float_int8']}; size bytes: {results['bytes']}")
    print(f"every set within {TOLERANCE} on both: {results['within_tolerance']}")
    print(f"\nwritten to {path.relative_to(ROOT)}")
