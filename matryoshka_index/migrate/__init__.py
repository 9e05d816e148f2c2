"""Migrate an existing Qdrant collection to the matryoshka layout, losing nothing: copy mode or in place.

Copy mode (the default)
-----------------------
``migrate_collection(client, "docs", ...)`` (and ``mindex migrate``) follows these steps:

1. **Read** the source's config: its single unnamed vector or the named vector chosen with
   ``vector=``; every other named (dense, multi) and sparse vector is carried over unchanged, as are
   payload indexes and the collection's shard/replication settings. Count the points exactly.
2. **Adaptor**: train one (unsupervised) on a random sample of the source's vectors, or load the
   one given. It is stored with the target (companion collection) *before* any point is copied,
   so a resumed run uses exactly the same adaptor.
3. **Create** the target with the other vectors plus ``coarse`` (adapted prefix, HNSW) and ``full``
   (the chosen vector, HNSW off), then copy every point (id, payload, vectors) in batches, with a
   progress bar, concurrent upserts (server mode) and retries with backoff on transient errors.
4. **Checkpoint**: the scroll offset below which every batch has been acknowledged, and the count,
   kept in the *target collection's metadata* (key ``matryoshka_index_migration``). It lives on
   the server, next to the data it describes: it survives a crash or Ctrl-C of this process (or of
   the machine running it), can be resumed from any machine, and disappears with the target if
   the target is dropped, so it can never point at data that is gone. ``resume=True`` continues from
   it; batches written after the checkpoint are simply written again, and an upsert by id is
   idempotent, so nothing is duplicated or skipped.
5. **Verify**: exact counts equal; a random sample of points (``verify="full"``: all of them) compared
   for payload equality and vector equality; recall@10 of matryoshka search against exact
   full-dimension search on sampled queries.
6. **Alias**: only after verification passed, ``alias`` is switched to the target in one atomic
   ``update_collection_aliases`` request, so readers never see a half-migrated collection.
   The source collection is never modified or deleted.
7. ``dry_run=True`` returns the plan (points, dims, estimated size and time) and writes nothing.

In place (``in_place=True``, ``mindex migrate --in-place``)
-----------------------------------------------------------
Needs Qdrant >= 1.18, which can add a named vector to an existing collection
(``create_vector_name``; ``update_collection(vectors_config=...)`` cannot). The collection gains
``coarse`` and nothing else: every existing vector and payload stays as it is, no second copy of the
data is written, and the collection's original vector (named or unnamed) serves as the full vector
for the rerank (the index record names it). Steps:

1. **Read** the collection as in copy mode; check the server version (``client.info()``): an older
   server is refused with one line before anything is written.
2. **Fingerprint** what must not change, before changing anything: a random sample of points
   (``verify_sample``), each with a digest of its payload and one of all its vectors, and with
   ``verify="full"`` an order-independent digest of every point. They are kept in the companion
   collection ``<collection>__mindex_meta`` (record ``matryoshka_index_migration_check``).
3. **Adaptor** trained or loaded as in copy mode, stored in the companion collection; the index
   record goes into the collection metadata (``matryoshka_index``), the migration record and
   checkpoint too (``matryoshka_index_migration``, ``mode: "in_place"``).
4. ``create_vector_name("coarse")`` (dense, ``coarse_dim``, the collection's distance; HNSW and
   quantization as the collection's defaults, or ``coarse_quantization`` set on ``coarse`` with
   ``update_collection``), then **batched** ``update_vectors`` of ``coarse`` alone, with the same
   checkpoint/resume as copy mode (an update is idempotent, so batches redone after a crash change
   nothing).
5. **Verify**: the point count is unchanged; every point that has the original vector has
   ``coarse``; the sampled points' payload and vector digests are unchanged (``verify="full"``:
   every point's, through the collection digest); recall@10 as in copy mode.
6. ``rollback_in_place(client, "docs")`` (``mindex migrate --rollback``) removes what the migration
   added and nothing else: the ``coarse`` vector (``delete_vector_name``), our metadata keys and the
   companion collection when the migration created it. It refuses a collection whose ``coarse`` was
   not added by an in-place migration.

While an in-place migration is unfinished, ``MatryoshkaIndex.from_qdrant`` refuses the collection
(the user's own searches on their own vector are unaffected throughout). Points the application
writes later without a ``coarse`` vector are invisible to matryoshka search (add them through
:class:`~matryoshka_index.MatryoshkaIndex`, or give them ``coarse`` with the adaptor).

Prefix only (``prefix_only=True``, ``mindex migrate --prefix-only --dim M``)
--------------------------------------------------------------------------
Copy mode whose target keeps the ``M``-dim adapted prefix ``coarse`` alone: no ``full`` vector, every
point with its id, payload and other vectors. The plan measures the quality the prefix keeps (nDCG@10
on the user's labelled sample, else recall@10 against exact full-dim search) and the bytes it saves;
verification compares ``coarse`` with the prefix recomputed from the source, checks that no full
vector is stored, and measures the same quality on the target. See :mod:`.prefix_only`. With
``edge_path=DIR`` the target is a qdrant-edge shard in ``DIR`` instead (:mod:`.prefix_only_edge`).

Both modes
----------
The plan and the report give the extra disk and RAM each mode needs, as estimates: points x dims x
bytes per value (4 for float32), payloads measured on a sampled batch; HNSW links, payload indexes
and the write-ahead log come on top.

Cosine collections store their vectors normalised (Qdrant normalises on upsert), so the original
norms are not recoverable by any migration, and writing an already-normalised vector into the Cosine
``full`` vector normalises it again, which may change its last bits: in copy mode full vectors (and
other Cosine vectors) are compared within ``1e-6`` per component; Dot vectors, sparse vectors and
payloads must be identical. In place nothing is rewritten, so everything must be bit-identical.
Only Cosine and Dot sources are supported (matryoshka search ranks by inner product). The source
should not be written to during a migration: points added behind the cursor would be missed, which
verification then reports (a count mismatch, or points without ``coarse``).

Layout
------
One driver (:mod:`.driver`) runs the stages both modes share (:mod:`.context` holds what they pass on); :mod:`.modes` holds only what
differs (:class:`~.modes.CopyMode`, :class:`~.modes.InPlaceMode`, and :class:`~.prefix_only.PrefixOnlyMode`
with its quality measurement in :mod:`.prefix_only`). The stages: :mod:`.source`
(read the source), :mod:`.checkpoint` (the typed migration record), :mod:`.adapting` (stored, given
or trained adaptor), :mod:`.plan` (estimates), :mod:`.writer` (batches and checkpoints),
:mod:`.fingerprint` and :mod:`.verify`, :mod:`.rollback`; :mod:`.reports` holds what is returned.
Warnings go to the module loggers (``matryoshka_index.migrate.*``) and into the report's
``warnings``.
"""

from __future__ import annotations

from .checkpoint import MIGRATION_FORMAT, MIGRATION_VERSION, Checkpoint, State
from .driver import DEFAULT_COARSE_DIM, connect_source, migrate_collection
from .fingerprint import CHECK_KEY
from .modes import MIN_IN_PLACE_VERSION, server_version
from .plan import ESTIMATE_BASIS
from .reports import BatchEvent, MigrationPlan, MigrationReport, RollbackReport, VerificationResult
from .rollback import rollback_in_place
from .verify import FULL_VECTOR_TOLERANCE

__all__ = [
    "CHECK_KEY",
    "DEFAULT_COARSE_DIM",
    "ESTIMATE_BASIS",
    "FULL_VECTOR_TOLERANCE",
    "MIGRATION_FORMAT",
    "MIGRATION_VERSION",
    "MIN_IN_PLACE_VERSION",
    "BatchEvent",
    "Checkpoint",
    "MigrationPlan",
    "MigrationReport",
    "RollbackReport",
    "State",
    "VerificationResult",
    "connect_source",
    "migrate_collection",
    "rollback_in_place",
    "server_version",
]
