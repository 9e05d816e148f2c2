"""Labelled retrieval data (BEIR layout) and the train/test split discipline.

A labelled set is corpus embeddings with string ids, query embeddings with string ids, and
relevance judgements (qrels) ``{query_id: {corpus_id: relevance}}``. On disk it follows BEIR::

    corpus.npy  queries.npy  ids.json            embeddings, rows in the order of ids.json
                                                 ({"corpus_ids": [...], "query_ids": [...]})
    queries.jsonl                                optional: {"_id": ..., "split": "train" | "test", ...}
    qrels/test.tsv  qrels/train.tsv              "query-id<TAB>corpus-id<TAB>score", header line

The split discipline lives in :class:`QuerySplit`: test queries are those judged in the test qrels,
training queries those judged in the training qrels, and the two sets must be disjoint (also by the
``split`` field of ``queries.jsonl`` when given). Nothing labelled reaches training except through
:meth:`QuerySplit.training_pairs`, which only ever reads the training qrels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..metrics import Qrels
from ..storage import load_vectors
from ..validation import check_embeddings

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------- files
def _file(path: PathLike, name: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{name}: {p}: file not found")
    return p


def read_qrels(path: PathLike, name: str = "qrels") -> dict[str, dict[str, float]]:
    """Read relevance judgements: BEIR TSV (``query-id corpus-id score``, header line optional) or
    TREC qrels (``query-id 0 corpus-id score``). Columns are split on tabs, else on whitespace."""
    p = _file(path, name)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{name}: {p}: is not UTF-8 text; expected a TSV of query-id, corpus-id, score") from None
    out: dict[str, dict[str, float]] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        cols = [c.strip() for c in cols]
        if len(cols) == 4:  # TREC: qid iteration docid rel
            cols = [cols[0], cols[2], cols[3]]
        if len(cols) != 3:
            raise InputError(
                f"{name}: {p} line {lineno}: expected 3 columns (query-id, corpus-id, score), got {len(cols)}"
            )
        qid, did, score = cols
        try:
            rel = float(score)
        except ValueError:
            if lineno == 1 or not out:  # the BEIR header "query-id corpus-id score"
                continue
            raise InputError(f"{name}: {p} line {lineno}: score {score!r} is not a number") from None
        if not np.isfinite(rel):
            raise InputError(f"{name}: {p} line {lineno}: score {score!r} is not finite")
        out.setdefault(qid, {})[did] = rel
    if not out:
        raise InputError(f"{name}: {p}: holds no judgements")
    return out


def read_ids(path: PathLike, name: str = "ids") -> list[str]:
    """Ids from a JSON list (``.json``) or a text file with one id per line."""
    p = _file(path, name)
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{name}: {p}: is not valid JSON ({exc.__class__.__name__})") from None
        if not isinstance(data, list):
            raise InputError(f"{name}: {p}: expected a JSON list of ids")
        return [str(x) for x in data]
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_ids_json(path: PathLike, name: str = "ids") -> tuple[list[str], list[str]]:
    """``(corpus_ids, query_ids)`` from a BEIR-embedding ``ids.json`` (``{"corpus_ids": [...], "query_ids": [...]}``)."""
    p = _file(path, name)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{name}: {p}: is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("corpus_ids", "query_ids")):
        raise InputError(f"{name}: {p}: expected an object with lists 'corpus_ids' and 'query_ids'")
    return [str(x) for x in data["corpus_ids"]], [str(x) for x in data["query_ids"]]


def read_query_splits(path: PathLike, name: str = "queries") -> dict[str, str]:
    """``{query_id: split}`` from a BEIR ``queries.jsonl`` (records without a ``split`` field are left out)."""
    p = _file(path, name)
    out: dict[str, str] = {}
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{name}: {p} line {lineno}: is not a JSON object") from None
        if not isinstance(rec, dict) or "_id" not in rec:
            raise InputError(f"{name}: {p} line {lineno}: a query record needs an '_id' field")
        if rec.get("split") is not None:
            out[str(rec["_id"])] = str(rec["split"])
    return out


# ---------------------------------------------------------------------- ids and qrels
def check_string_ids(ids: Sequence[object], n_rows: int, name: str) -> list[str]:
    """One unique id per embedding row, as strings."""
    if isinstance(ids, (str, bytes)):
        raise InputError(f"{name}: expected a sequence of ids, got a single string")
    out = [str(x) for x in ids]
    if len(out) != n_rows:
        raise InputError(f"{name}: has {len(out)} ids for {n_rows} embedding rows; give exactly one id per row")
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(x for x in out if x in seen or seen.add(x))  # type: ignore[func-returns-value]
        raise InputError(f"{name}: duplicate id {dup!r}; every id must be unique")
    return out


def check_qrels(qrels: Qrels, query_ids: Sequence[str], corpus_ids: Sequence[str], name: str) -> dict:
    """Every judged query and document must be known; returns the qrels as plain dicts of floats."""
    if not isinstance(qrels, Mapping):
        raise InputError(f"{name}: expected a mapping {{query_id: {{corpus_id: score}}}} or a qrels file path")
    known_q, known_d = set(query_ids), set(corpus_ids)
    out: dict[str, dict[str, float]] = {}
    for qid, docs in qrels.items():
        qid = str(qid)
        if qid not in known_q:
            raise InputError(f"{name}: query id {qid!r} is not among the query ids; the qrels belong to other queries")
        if not isinstance(docs, Mapping):
            raise InputError(f"{name}: judgements of query {qid!r} must map corpus ids to scores")
        for did, score in docs.items():
            if str(did) not in known_d:
                raise InputError(
                    f"{name}: corpus id {str(did)!r} (judged for query {qid!r}) is not among the corpus ids"
                )
            out.setdefault(qid, {})[str(did)] = float(score)
    return out


def _positives(qrels: Mapping[str, Mapping[str, float]]) -> list[str]:
    return [q for q, docs in qrels.items() if any(s > 0 for s in docs.values())]


@dataclass(frozen=True)
class QuerySplit:
    """Which query rows are evaluated (test) and which may be trained on (train); disjoint by construction.

    Build it with :func:`split_queries`. ``train_rows`` is empty when no training qrels were given.
    """

    test_rows: np.ndarray
    train_rows: np.ndarray
    test_ids: tuple[str, ...]
    train_ids: tuple[str, ...]
    train_qrels: Mapping[str, Mapping[str, float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # The one promise of this object; checked on every construction, not only in split_queries.
        overlap = set(self.test_ids) & set(self.train_ids)
        if overlap or np.intersect1d(self.test_rows, self.train_rows).size:
            raise InputError(
                f"train_qrels: {len(overlap)} query id(s) are also test queries, e.g. {sorted(overlap)[:1]}; "
                "a test query must never be trained on"
            )

    def training_pairs(self, query_ids: Sequence[str], corpus_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(query_rows, corpus_rows)``: one pair per (training query, relevant document); several
        relevant documents of one query give several pairs. Only training queries can appear."""
        qrow = {q: i for i, q in enumerate(query_ids)}
        drow = {d: i for i, d in enumerate(corpus_ids)}
        qs: list[int] = []
        ds: list[int] = []
        for qid in self.train_ids:
            for did, score in sorted(self.train_qrels[qid].items()):
                if score > 0:
                    qs.append(qrow[qid])
                    ds.append(drow[did])
        q_arr, d_arr = np.asarray(qs, dtype=np.int64), np.asarray(ds, dtype=np.int64)
        test = set(self.test_rows.tolist())
        assert not any(int(r) in test for r in q_arr), "split discipline broken: a test query reached training"
        return q_arr, d_arr


def split_queries(
    query_ids: Sequence[str],
    corpus_ids: Sequence[str],
    qrels: Qrels,
    train_qrels: Qrels | None = None,
    query_splits: Mapping[str, str] | None = None,
) -> tuple[QuerySplit, dict[str, dict[str, float]]]:
    """The test/train split of the queries, and the checked test qrels.

    Test queries: those with at least one positive judgement in ``qrels``. Training queries: those
    with one in ``train_qrels``. Raises :class:`InputError` when the test set is empty, when a query
    is in both, or when ``query_splits`` (the ``split`` field of ``queries.jsonl``) marks a test
    query as ``train`` or a training query as ``test``.
    """
    test_qrels = check_qrels(qrels, query_ids, corpus_ids, "qrels")
    train_checked = check_qrels(train_qrels, query_ids, corpus_ids, "train_qrels") if train_qrels is not None else {}
    row = {q: i for i, q in enumerate(query_ids)}
    test_ids = sorted(_positives(test_qrels), key=row.__getitem__)
    train_ids = sorted(_positives(train_checked), key=row.__getitem__)
    if not test_ids:
        raise InputError("qrels: no query has a relevant document (score > 0); nothing to evaluate")
    if train_qrels is not None and not train_ids:
        raise InputError("train_qrels: no query has a relevant document (score > 0); nothing to train on")
    both = set(test_ids) & set(train_ids)
    if both:
        raise InputError(
            f"train_qrels: {len(both)} query id(s) also judged in the test qrels, e.g. {sorted(both)[0]!r}; "
            "train and test queries must be disjoint"
        )
    if query_splits:
        bad_test = [q for q in test_ids if query_splits.get(q) == "train"]
        if bad_test:
            raise InputError(f"qrels: query {bad_test[0]!r} is judged as a test query but its split is 'train'")
        bad_train = [q for q in train_ids if query_splits.get(q) == "test"]
        if bad_train:
            raise InputError(
                f"train_qrels: query {bad_train[0]!r} has split 'test'; a test query must never be trained on"
            )
    split = QuerySplit(
        test_rows=np.array([row[q] for q in test_ids], dtype=np.int64),
        train_rows=np.array([row[q] for q in train_ids], dtype=np.int64),
        test_ids=tuple(test_ids),
        train_ids=tuple(train_ids),
        train_qrels={q: train_checked[q] for q in train_ids},
    )
    return split, {q: test_qrels[q] for q in test_ids}


# ---------------------------------------------------------------------- a whole set
@dataclass
class LabelledSet:
    """A labelled retrieval set in memory (embeddings may be memory-mapped)."""

    name: str
    corpus: np.ndarray
    corpus_ids: list[str]
    queries: np.ndarray
    query_ids: list[str]
    qrels: dict[str, dict[str, float]]
    train_qrels: dict[str, dict[str, float]] | None = None
    query_splits: dict[str, str] | None = None
    path: Path | None = None


def is_beir_dir(path: PathLike, split: str = "test") -> bool:
    p = Path(path)
    return all((p / f).is_file() for f in ("corpus.npy", "queries.npy", "ids.json", f"qrels/{split}.tsv"))


def discover_labelled_sets(root: PathLike, split: str = "test") -> list[Path]:
    """Directories under ``root`` (and ``root`` itself) in the BEIR-embedding layout, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"root: {root}: not a directory")
    found = [root] if is_beir_dir(root, split) else []
    found += sorted(p for p in root.iterdir() if p.is_dir() and is_beir_dir(p, split))
    return found


def load_beir(
    directory: PathLike, *, test_split: str = "test", train_split: str | None = "train", mmap: bool = True
) -> LabelledSet:
    """Load a labelled set in the BEIR-embedding layout (see the module docstring).

    ``qrels/{train_split}.tsv`` and ``queries.jsonl`` are optional; the embeddings are memory-mapped.
    """
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"directory: {d}: not found or not a directory")
    for f in ("corpus.npy", "queries.npy", "ids.json", f"qrels/{test_split}.tsv"):
        if not (d / f).is_file():
            raise InputError(f"directory: {d} has no {f}; expected the BEIR-embedding layout")
    corpus = check_embeddings(load_vectors(d / "corpus.npy", mmap=mmap), "corpus")
    queries = check_embeddings(load_vectors(d / "queries.npy", mmap=mmap), "queries", dim=corpus.shape[1])
    corpus_ids, query_ids = read_ids_json(d / "ids.json")
    corpus_ids = check_string_ids(corpus_ids, len(corpus), "corpus_ids")
    query_ids = check_string_ids(query_ids, len(queries), "query_ids")
    train_path = d / "qrels" / f"{train_split}.tsv" if train_split else None
    return LabelledSet(
        name=d.name,
        corpus=corpus,
        corpus_ids=corpus_ids,
        queries=queries,
        query_ids=query_ids,
        qrels=read_qrels(d / "qrels" / f"{test_split}.tsv", "qrels"),
        train_qrels=read_qrels(train_path, "train_qrels") if train_path and train_path.is_file() else None,
        query_splits=read_query_splits(d / "queries.jsonl") if (d / "queries.jsonl").is_file() else None,
        path=d,
    )


def load_labelled_files(
    corpus: PathLike,
    queries: PathLike,
    qrels: PathLike,
    train_qrels: PathLike | None = None,
    *,
    ids: PathLike | None = None,
    corpus_ids: PathLike | None = None,
    query_ids: PathLike | None = None,
    queries_jsonl: PathLike | None = None,
    name: str | None = None,
) -> LabelledSet:
    """A labelled set from separate files (what ``mindex eval --qrels ...`` is given).

    Ids come from ``ids`` (an ``ids.json`` with ``corpus_ids`` and ``query_ids``) or from
    ``corpus_ids`` and ``query_ids`` (JSON lists or one id per line). ``queries_jsonl`` (BEIR
    ``queries.jsonl``) supplies the ``split`` field checked against both qrels.
    """
    if ids is not None and (corpus_ids is not None or query_ids is not None):
        raise InputError("ids: give either ids (ids.json) or corpus_ids and query_ids, not both")
    c = check_embeddings(load_vectors(corpus), "corpus")
    q = check_embeddings(load_vectors(queries), "queries", dim=c.shape[1])
    if ids is not None:
        cids, qids = read_ids_json(ids)
    elif corpus_ids is not None and query_ids is not None:
        cids, qids = read_ids(corpus_ids, "corpus_ids"), read_ids(query_ids, "query_ids")
    else:
        raise InputError(
            "ids: labelled evaluation needs the ids of the rows: give ids.json, or corpus_ids and query_ids"
        )
    return LabelledSet(
        name=name if name is not None else Path(corpus).parent.name,
        corpus=c,
        corpus_ids=check_string_ids(cids, len(c), "corpus_ids"),
        queries=q,
        query_ids=check_string_ids(qids, len(q), "query_ids"),
        qrels=read_qrels(qrels, "qrels"),
        train_qrels=read_qrels(train_qrels, "train_qrels") if train_qrels is not None else None,
        query_splits=read_query_splits(queries_jsonl) if queries_jsonl is not None else None,
    )
