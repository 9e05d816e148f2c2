"""The index manifest: the one owner of its format name, format version, file name and keys.

A saved index is a directory whose ``manifest.json`` describes everything else in it; an index
stored in a Qdrant collection keeps the same dict in the collection's metadata (a migration writes
one too). Whoever writes or reads a manifest goes through this module, so the format cannot drift
between the index, the Qdrant backend and the migration.

Keys (in the order :func:`make_manifest` writes them; files sort them):

* ``format`` (:data:`FORMAT`), ``format_version`` (:data:`FORMAT_VERSION`), ``library_version``,
  ``created`` (UTC, ISO 8601 to the second);
* ``metric`` (``"cosine"`` or ``"ip"``), ``input_dim``, ``coarse_dim``, ``full_dim``, ``rerank``
  (``"original"``, ``"adapted"``, or null for a prefix-only index, which keeps no full vectors: its
  ``full_dim`` is 0; readers before it refuse such a manifest in one line);
* ``adaptor``: ``{"kind": "none" | "pca" | "matryoshka-adaptor", "directory": "adaptor" | null}``;
* ``count``: stored (live) vectors;
* ``candidates``: the default candidate count of a search;
* ``calibration``: how that default was chosen (see :mod:`matryoshka_index.calibration`);
* ``backend``: the backend's own section (what ``backend.save`` returned, with ``kind``);
* ``files``: ``{relative path: sha256}`` of every file of a saved directory, checked on load;
* ``manifest_sha256``: the sha256 of the manifest's own canonical form (:func:`canonical_form`: the
  manifest minus this key, ``json.dumps(sort_keys=True, separators=(",", ":"))``), checked on load
  like the files (``verify=False`` skips both). Manifests written before it existed have none and
  load as before; an added key needs no new format version (readers of version 1 ignore unknown keys);
* anything else a writer adds (a migration adds ``origin``) is kept and ignored by readers.

Nothing in a manifest is trusted blindly: :func:`check_manifest_fields` checks every field's type,
range and enumeration and the fields against each other (the calibration record against the default
candidate count, the backend's section against the dims, metric and count), :func:`check_manifest_fits`
checks it against the opened backend, :func:`verify_manifest_checksum` its checksum (last, so that a
wrong field is named rather than reported as a changed checksum); :func:`check_manifest` does all three
for a manifest kept outside a directory (a Qdrant collection's metadata). Every problem is one
:class:`FormatError` line naming the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._version import __version__
from .calibration import MAX_CANDIDATES
from .errors import FormatError
from .storage import read_versioned_json, sha256_file

FORMAT = "matryoshka-index"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
ADAPTOR_DIR = "adaptor"
SUPPORTED_VERSIONS = (FORMAT_VERSION,)
CHECKSUM_KEY = "manifest_sha256"
METRICS = ("cosine", "ip")
RERANKS = ("original", "adapted")
PREFIX_ONLY = None
"""``rerank`` of a prefix-only index (``build(..., rerank=None)``): no full vectors, ``full_dim`` 0."""
ADAPTOR_KINDS = ("none", "pca", "matryoshka-adaptor")
BACKEND_KINDS = ("faiss", "qdrant", "qdrant-edge")
"""The backends a manifest may name: ``matryoshka_index.backends.BACKENDS`` (a test keeps them equal;
the manifest is a bottom module and imports nothing of the backends)."""
STORED = ("directory", "qdrant")
REPAIR = "the manifest is corrupt or was edited: rebuild the index, or restore the manifest it was saved with"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def now_utc() -> str:
    """The ``created`` timestamp format: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_manifest(
    *,
    metric: str,
    input_dim: int,
    coarse_dim: int,
    full_dim: int,
    rerank: str | None,
    adaptor_kind: str,
    adaptor_directory: str | None,
    count: int,
    candidates: int,
    calibration: dict[str, Any],
    backend: dict[str, Any],
    created: str | None = None,
    files: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A manifest dict (the keys in the module docstring). ``extra`` keys (e.g. ``origin``) go last."""
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "created": created or now_utc(),
        "metric": metric,
        "input_dim": input_dim,
        "coarse_dim": coarse_dim,
        "full_dim": full_dim,
        "rerank": rerank,
        "adaptor": {"kind": adaptor_kind, "directory": adaptor_directory},
        "count": count,
        "candidates": candidates,
        "calibration": calibration,
        "backend": backend,
    }
    if files is not None:
        manifest["files"] = files
    manifest.update(extra)
    return seal_manifest(manifest)


def canonical_form(manifest: dict[str, Any]) -> bytes:
    """What the manifest's checksum covers: the manifest minus :data:`CHECKSUM_KEY`, keys sorted, compact."""
    rest = {k: v for k, v in manifest.items() if k != CHECKSUM_KEY}
    return json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """sha256 (hex) of :func:`canonical_form`."""
    return hashlib.sha256(canonical_form(manifest)).hexdigest()


def seal_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its checksum (re)computed, in place (also returned). Whoever changes a manifest
    after :func:`make_manifest` (a migration updating ``count``) seals it again."""
    manifest.pop(CHECKSUM_KEY, None)
    manifest[CHECKSUM_KEY] = manifest_checksum(manifest)
    return manifest


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """How ``manifest.json`` is written: sorted keys, two-space indent, a final newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


# ---------------------------------------------------------------------- checking a manifest
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, float) and math.isfinite(v)) or _is_int(v)


class _Fields:
    """One manifest's field checks; every failure is ``FormatError("<where>: '<field>' <problem>; <repair>")``."""

    def __init__(self, manifest: dict[str, Any], where: str) -> None:
        self.m, self.where = manifest, where

    def fail(self, field: str, problem: str) -> None:
        raise FormatError(f"{self.where}: '{field}' {problem}; {REPAIR}")

    def get(self, field: str, ok: Callable[[Any], bool], expected: str, section: dict | None = None) -> Any:
        name = field.rpartition(".")[2]
        source = self.m if section is None else section
        if name not in source:
            self.fail(field, "is missing")
        value = source[name]
        if not ok(value):
            self.fail(field, f"must be {expected}, got {value!r}")
        return value

    def integer(self, field: str, lo: int, section: dict | None = None) -> int:
        return self.get(field, lambda v: _is_int(v) and v >= lo, f"an integer >= {lo}", section)

    def fraction(self, field: str, section: dict, *, lo_open: bool) -> float:
        def ok(v: Any) -> bool:
            return _is_number(v) and (0 < v <= 1 if lo_open else 0 <= v <= 1)

        return self.get(field, ok, "a number in (0, 1]" if lo_open else "a number in [0, 1]", section)

    def choice(self, field: str, options: tuple[str, ...], section: dict | None = None) -> str:
        return self.get(field, lambda v: v in options, f"one of {', '.join(map(repr, options))}", section)

    def text(self, field: str, section: dict | None = None) -> str:
        return self.get(field, lambda v: isinstance(v, str) and bool(v), "a non-empty string", section)


def _check_steps(f: _Fields, steps: Any) -> list[list[Any]]:
    """``[[candidates, knob, recall(, lower bound)], ...]`` (records before the bound had three columns)."""

    def ok_step(s: Any) -> bool:
        return (
            isinstance(s, list)
            and len(s) in (3, 4)
            and _is_int(s[0])
            and s[0] >= 1
            and (s[1] is None or (_is_int(s[1]) and s[1] >= 1))
            and all(_is_number(v) for v in s[2:])
        )

    if not isinstance(steps, list) or not all(ok_step(s) for s in steps):
        f.fail("calibration.steps", "must be a list of [candidates, knob or null, recall, lower bound] steps")
    return steps


def _check_calibration(f: _Fields, cal: Any) -> int | None:
    """The calibration section: ``{}`` (none yet, e.g. a migration), ``{"skipped": why}`` or a record
    (see :mod:`matryoshka_index.calibration`). Returns the candidates the record chose, or None."""
    if not isinstance(cal, dict):
        f.fail("calibration", f"must be an object, got {type(cal).__name__}")
    if not cal:
        return None
    if "skipped" in cal:
        f.text("calibration.skipped", cal)
        return None
    f.integer("calibration.k", 1, cal)
    target = f.fraction("calibration.target_recall", cal, lo_open=True)
    f.fraction("calibration.recall", cal, lo_open=False)
    reached = f.get("calibration.reached", lambda v: isinstance(v, bool), "true or false", cal)
    f.integer("calibration.queries", 0, cal)
    chosen = f.integer("calibration.candidates", 1, cal)
    bound = cal.get("recall_lower_bound", cal["recall"])  # records before the bound compared the mean
    if "recall_lower_bound" in cal:
        f.get("calibration.recall_lower_bound", lambda v: _is_number(v) and v <= 1, "a number <= 1", cal)
    # reached is computed from the unrounded bound, stored rounded to 5 digits: allow that much
    if reached != (bound >= target) and abs(bound - target) > 1e-5:
        f.fail(
            "calibration.reached", f"is {str(reached).lower()} but the recall bound {bound} vs target {target} says not"
        )
    knob = cal.get("knob")
    ok_knob = knob is None or (
        isinstance(knob, dict) and len(knob) == 1 and all(_is_int(v) and v >= 1 for v in knob.values())
    )
    if not ok_knob:
        f.fail("calibration.knob", f"must be null or one {{name: positive integer}}, got {knob!r}")
    for key in ("truth", "method", "query_source", "warning"):
        if key in cal:
            f.text(f"calibration.{key}", cal)
    for key in ("seconds",):
        if key in cal:
            f.get(f"calibration.{key}", lambda v: _is_number(v) and v >= 0, "a number >= 0", cal)
    if "min_queries" in cal:
        f.get("calibration.min_queries", lambda v: v is None or (_is_int(v) and v >= 1), "null or >= 1", cal)
    if "steps" in cal:
        steps = _check_steps(f, cal["steps"])
        if steps and chosen not in {s[0] for s in steps}:
            f.fail("calibration.candidates", f"is {chosen}, which is not among the measured 'calibration.steps'")
    return chosen


def _check_backend_section(f: _Fields, section: Any, stored: str) -> None:
    """The backend's own section: its kind, and what it repeats of the manifest (checked against it).
    The rest is the backend's to check when it opens."""
    if not isinstance(section, dict):
        f.fail("backend", f"must be an object naming the backend's kind, got {section!r}")
    kind = f.get("backend.kind", lambda v: isinstance(v, str), "a backend name", section)
    if kind not in BACKEND_KINDS:
        f.fail("backend.kind", f"names an unknown backend {kind!r} (known: {', '.join(BACKEND_KINDS)})")
    for key in ("coarse_dim", "full_dim"):
        if key in section and section[key] != f.m[key]:
            dims = {k: section.get(k, f.m[k]) for k in ("coarse_dim", "full_dim")}
            raise FormatError(
                f"{f.where}: dims coarse={f.m['coarse_dim']} full={f.m['full_dim']} but the backend stores "
                f"coarse={dims['coarse_dim']} full={dims['full_dim']} ('{key}' vs 'backend.{key}'); {REPAIR}"
            )
    for key in ("metric", "count"):
        if key in section and section[key] != f.m[key] and not (key == "metric" and section[key] not in METRICS):
            f.fail(key, f"is {f.m[key]!r} but 'backend.{key}' is {section[key]!r}")
    if kind == "qdrant-edge" and "points" in section and section["points"] != f.m["count"]:
        f.fail("count", f"is {f.m['count']!r} but 'backend.points' is {section['points']!r}")
    if stored == "directory" and isinstance(section.get("files"), list):
        missing = [name for name in section["files"] if name not in f.m.get("files", {})]
        if missing:
            f.fail("backend.files", f"names {missing[0]!r}, which the manifest's 'files' table lacks")


def check_manifest_fields(manifest: Any, *, where: str, stored: str = "directory") -> dict[str, Any]:
    """Every field of ``manifest`` checked on its own and against the others (no file is read).

    ``stored``: ``"directory"`` (a saved index: a ``files`` table and ``adaptor/`` when there is an
    adaptor) or ``"qdrant"`` (collection metadata: no file table, the adaptor in a companion
    collection). The checksum's form is checked here, its value by :func:`verify_manifest_checksum`.
    """
    if stored not in STORED:
        raise ValueError(f"stored: expected one of {STORED}, got {stored!r}")
    if not isinstance(manifest, dict):
        raise FormatError(f"{where}: the manifest must be a JSON object, got {type(manifest).__name__}; {REPAIR}")
    if manifest.get("format") != FORMAT:
        raise FormatError(f"{where}: is not a {FORMAT} manifest (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not _is_int(version) or version not in SUPPORTED_VERSIONS:
        raise FormatError(
            f"{where}: {FORMAT} format version {version!r} is not supported by this version of matryoshka-index "
            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade matryoshka-index or rebuild the index"
        )
    f = _Fields(manifest, where)
    if CHECKSUM_KEY in manifest:
        f.get(CHECKSUM_KEY, lambda v: isinstance(v, str) and bool(_SHA256.fullmatch(v)), "64 hex digits (sha256)")
    f.text("library_version")
    f.get("created", _is_iso_timestamp, "an ISO 8601 timestamp")
    f.choice("metric", METRICS)
    rerank = f.get(
        "rerank", lambda v: v is PREFIX_ONLY or v in RERANKS, "one of 'original', 'adapted' or null (prefix only)"
    )
    input_dim, coarse_dim = (f.integer(k, 1) for k in ("input_dim", "coarse_dim"))
    full_dim = f.integer("full_dim", 0 if rerank is PREFIX_ONLY else 1)
    if rerank is PREFIX_ONLY:
        if full_dim != 0:
            f.fail("full_dim", f"is {full_dim} but 'rerank' is null (prefix only, no full vectors): it must be 0")
        if coarse_dim > input_dim:
            f.fail("coarse_dim", f"is {coarse_dim}, more than 'input_dim' {input_dim}")
    else:
        if coarse_dim > full_dim:
            f.fail("coarse_dim", f"is {coarse_dim}, more than 'full_dim' {full_dim}")
        if full_dim != input_dim:
            f.fail(
                "full_dim", f"is {full_dim} but 'input_dim' is {input_dim} (the rerank vectors have the input's size)"
            )
    adaptor = f.get("adaptor", lambda v: isinstance(v, dict), "an object {kind, directory}")
    kind = f.choice("adaptor.kind", ADAPTOR_KINDS, adaptor)
    directory = adaptor.get("directory")
    allowed = [None] if kind == "none" else [ADAPTOR_DIR] if stored == "directory" else [None, ADAPTOR_DIR]
    if directory not in allowed:
        f.fail("adaptor.directory", f"is {directory!r}; for adaptor kind {kind!r} it must be {allowed[0]!r}")
    count = f.integer("count", 0)
    if "calibration" not in manifest:
        f.fail("calibration", "is missing")
    chosen = _check_calibration(f, manifest["calibration"])
    candidates = f.integer("candidates", 1)
    if chosen is not None and candidates != chosen:
        f.fail("candidates", f"is {candidates} but 'calibration.candidates' (what the calibration chose) is {chosen}")
    if chosen is None and candidates > max(count, MAX_CANDIDATES):
        f.fail("candidates", f"is {candidates}, more than the index's {count} vectors and the cap {MAX_CANDIDATES}")
    if stored == "directory":
        files = manifest.get("files")
        if not isinstance(files, dict) or not all(isinstance(v, str) and _SHA256.fullmatch(v) for v in files.values()):
            f.fail("files", "must be a table {relative path: sha256 hex digest}")
    _check_backend_section(f, manifest.get("backend"), stored)
    if "origin" in manifest and not isinstance(manifest["origin"], dict):
        f.fail("origin", f"must be an object, got {manifest['origin']!r}")
    return manifest


def _is_iso_timestamp(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        datetime.fromisoformat(v)
    except ValueError:
        return False
    return True


def check_manifest_fits(manifest: dict[str, Any], backend: Any, *, where: str) -> None:
    """The manifest against the opened ``backend``: dims and metric, and the count, except for a
    Qdrant collection (which the application may write to directly)."""
    coarse_dim, full_dim = manifest["coarse_dim"], manifest["full_dim"]
    if backend.coarse_dim != coarse_dim or backend.full_dim != full_dim:
        raise FormatError(
            f"{where}: dims coarse={coarse_dim} full={full_dim} but the backend stores "
            f"coarse={backend.coarse_dim} full={backend.full_dim}; {REPAIR}"
        )
    metric = getattr(backend, "metric", manifest["metric"])
    if metric in METRICS and metric != manifest["metric"]:
        raise FormatError(
            f"{where}: 'metric' is {manifest['metric']!r} but the backend's vectors use {metric!r}; {REPAIR}"
        )
    if getattr(backend, "kind", None) != "qdrant" and len(backend) != manifest["count"]:
        raise FormatError(
            f"{where}: 'count' is {manifest['count']} but the backend stores {len(backend)} vectors; {REPAIR}"
        )


def verify_manifest_checksum(manifest: dict[str, Any], *, where: str) -> None:
    """The manifest's own checksum against its content (a manifest without one, written before it
    existed, passes: its fields are still checked)."""
    stored = manifest.get(CHECKSUM_KEY)
    if stored is not None and stored != manifest_checksum(manifest):
        raise FormatError(
            f"{where}: checksum ({CHECKSUM_KEY!r}) does not match the manifest's content; the manifest is "
            "corrupt or was edited by hand: rebuild the index, or restore the manifest it was saved with"
        )


def check_manifest(
    manifest: Any, *, where: str, stored: str = "directory", verify: bool = True, backend: Any | None = None
) -> dict[str, Any]:
    """All the checks of a manifest: its fields, how it fits ``backend`` (when given) and, with
    ``verify``, its checksum. Returns ``manifest``. For a Qdrant collection's metadata:
    ``check_manifest(manifest, where=f"collection {name!r} at {endpoint}", stored="qdrant", backend=backend)``.
    """
    check_manifest_fields(manifest, where=where, stored=stored)
    if backend is not None:
        check_manifest_fits(manifest, backend, where=where)
    if verify:
        verify_manifest_checksum(manifest, where=where)
    return manifest


def is_index_directory(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a manifest of this format (any version; nothing else is checked)."""
    try:
        return json.loads((Path(path) / MANIFEST_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(path: str | os.PathLike[str], *, verify: bool = True, verify_checksum: bool = True) -> dict[str, Any]:
    """The manifest of the index directory ``path``: its fields and its file table checked.

    Every file the manifest lists must lie inside ``path`` and exist; with ``verify`` its sha256 must
    match too (reads every byte once), and so must the manifest's own checksum (unless
    ``verify_checksum`` is False: :func:`~matryoshka_index.index.persistence.load_index` verifies it
    after checking the manifest against the backend, so that a wrong field is named first). Any
    problem is one :class:`FormatError` line.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no index here (not found)")
    if not path.is_dir():
        raise FormatError(f"{path}: not an index directory (a matryoshka index is a folder with {MANIFEST_FILE})")
    where = str(path / MANIFEST_FILE)
    manifest = read_versioned_json(path / MANIFEST_FILE, kind=FORMAT, supported_versions=SUPPORTED_VERSIONS)
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise FormatError(f"{where}: has no valid 'files' checksum table; the manifest is corrupt")
    targets = {}
    for rel in files:
        target = (path / rel).resolve()
        if Path(rel).is_absolute() or ".." in Path(rel).parts or path.resolve() not in target.parents:
            raise FormatError(f"{where}: file entry {rel!r} points outside the index directory")
        if not target.is_file():
            raise FormatError(f"{path / rel}: missing; the index directory is incomplete")
        targets[rel] = target
    check_manifest_fields(manifest, where=where, stored="directory")
    if verify:
        for rel, target in targets.items():
            if sha256_file(target) != files[rel]:
                raise FormatError(
                    f"{path / rel}: checksum does not match the manifest; the file is corrupt or replaced"
                )
        if verify_checksum:
            verify_manifest_checksum(manifest, where=where)
    return manifest


def file_table(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` but the manifest itself."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }


__all__ = [
    "ADAPTOR_DIR",
    "ADAPTOR_KINDS",
    "BACKEND_KINDS",
    "CHECKSUM_KEY",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "METRICS",
    "PREFIX_ONLY",
    "RERANKS",
    "SUPPORTED_VERSIONS",
    "canonical_form",
    "check_manifest",
    "check_manifest_fields",
    "check_manifest_fits",
    "file_table",
    "is_index_directory",
    "make_manifest",
    "manifest_bytes",
    "manifest_checksum",
    "now_utc",
    "read_manifest",
    "seal_manifest",
    "verify_manifest_checksum",
]
