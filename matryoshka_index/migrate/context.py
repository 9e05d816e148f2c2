"""What the stages of one migration share: its validated options and its run (client, source, store, record)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from qdrant_client import QdrantClient

from .._version import __version__
from ..backends.qdrant.metadata import META_KEY, MIGRATION_KEY, MetadataStore, index_record, utc_now
from .adapting import AdaptorChoice, train_adaptor, weights_sha
from .checkpoint import Checkpoint, State
from .plan import index_manifest
from .reports import BatchEvent, MigrationReport
from .source import Source


class Mode(Protocol):
    """What :class:`Run` reads of a mode (:class:`~.modes.CopyMode` or :class:`~.modes.InPlaceMode`)."""

    in_place: bool
    prefix_only: bool
    full_vector: str | None


@dataclass
class Options:
    """``migrate_collection``'s arguments that every stage may read (validated)."""

    vector: str | None
    coarse_dim: int | None
    sample: int
    resume: bool
    dry_run: bool
    verify: str
    verify_sample: int
    verify_seed: int | None
    recall_queries: int
    candidates: int
    adaptor: Any
    adaptor_options: dict[str, Any]
    batch_size: int
    parallel: int
    max_retries: int
    checkpoint_seconds: float
    coarse_quantization: str | None
    seed: int
    quiet: bool
    on_batch: Callable[[BatchEvent], None] | None
    labelled: Any = None
    """Prefix only: the user's labelled sample (:class:`~.prefix_only.LabelledSample`), or None."""


@dataclass
class Run:
    """What the stages of one migration share."""

    client: QdrantClient
    endpoint: str
    opts: Options
    mode: Mode
    src: Source = None  # type: ignore[assignment]
    store: MetadataStore = None  # type: ignore[assignment]
    coarse_dim: int = 0
    choice: AdaptorChoice | None = None
    adaptor_was_stored: bool = False
    adaptor_trained: bool = False
    report: MigrationReport | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def full_dim(self) -> int:
        """The index's full dimension: the source vector's, or 0 when the target keeps the prefix alone."""
        return 0 if self.mode.prefix_only else self.src.params.size

    def save(self, cp: Checkpoint) -> None:
        """Write the checkpoint (one metadata update: atomic)."""
        cp.updated = utc_now()
        self.store.write(cp.to_dict(), MIGRATION_KEY)

    def new_checkpoint(self, mode: str) -> Checkpoint:
        now = utc_now()
        return Checkpoint(
            mode=mode,
            state=State.CREATING,
            source=self.src.name,
            vector=self.src.vector,
            coarse_dim=self.coarse_dim,
            source_count=self.src.count,
            started=now,
            updated=now,
            library_version=__version__,
        )

    def ensure_model(self) -> Any:
        """The adaptor: stored or given, else trained now on a sample of the source."""
        choice = self.choice
        assert choice is not None
        if choice.model is None:
            choice.model = train_adaptor(
                self.client,
                self.src,
                self.endpoint,
                self.coarse_dim,
                choice.train_rows or min(self.opts.sample, self.src.count),
                seed=self.opts.seed,
                quiet=self.opts.quiet,
                options=self.opts.adaptor_options,
            )
            self.adaptor_trained = True
            if self.report is not None:  # a prefix-only plan needs the adaptor before there is a report
                self.report.adaptor_trained = True
        return choice.model

    def store_adaptor(self, cp: Checkpoint, model: Any) -> None:
        """The adaptor files into the companion collection, then the index record that points to them."""
        files = model.to_files()
        descriptor = self.store.write_blobs(files)
        manifest = index_manifest(
            self.src,
            self.coarse_dim,
            self.opts.candidates,
            in_place=self.mode.in_place,
            prefix_only=self.mode.prefix_only,
        )
        record = index_record(
            self.coarse_dim,
            self.full_dim,
            self.src.metric,
            manifest=manifest,
            adaptor=descriptor,
            full_vector=self.mode.full_vector,
        )
        self.store.write(record, META_KEY)
        cp.adaptor_sha256 = weights_sha(files)


__all__ = ["Mode", "Options", "Run"]
