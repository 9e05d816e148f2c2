"""The migration record and checkpoint (metadata key ``matryoshka_index_migration``) as a typed record.

It is stored as JSON text (``json.dumps(..., sort_keys=True)``) with exactly the keys the first
version wrote, so a record written by any version reads back here and is written back the same:

* both modes: ``format``, ``format_version``, ``state``, ``source``, ``vector``, ``coarse_dim``,
  ``source_count``, ``offset`` (the scroll offset below which every batch was acknowledged),
  ``batches``, ``points_without_vector``, ``started``, ``updated``, ``library_version``; the points
  written so far under ``copied`` (copy mode) or ``coarse_added`` (in place);
* once known: ``adaptor_sha256``, ``verification`` (the verification summary), ``finished``, and in
  copy mode ``alias`` with ``alias_previous`` once an alias was switched;
* in place only: ``mode: "in_place"``, ``added_vector``, ``coarse_quantization``, ``companion_created``,
  and (since 0.2, for an unnamed vector) ``unnamed_form``.

Keys this version does not know are kept as they are (``extra``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import FormatError

MIGRATION_FORMAT = "matryoshka-index-migration"
MIGRATION_VERSION = 1


class State(str, Enum):
    """Where a migration stands: creating -> writing -> written -> verified | verification_failed -> complete.

    In place, ``complete`` follows verification directly (there is no alias to switch).
    """

    CREATING = "creating"
    WRITING = "writing"
    WRITTEN = "written"
    VERIFIED = "verified"
    VERIFICATION_FAILED = "verification_failed"
    COMPLETE = "complete"


# what each mode calls the writing states in the stored record (the names of the first version)
_STORED = {
    ("copy", State.WRITING): "copying",
    ("copy", State.WRITTEN): "copied",
    ("in_place", State.WRITING): "updating",
    ("in_place", State.WRITTEN): "updated",
}
_PARSED = {(mode, text): state for (mode, state), text in _STORED.items()}
_COMMON = (
    "format",
    "format_version",
    "state",
    "source",
    "vector",
    "coarse_dim",
    "source_count",
    "offset",
    "batches",
    "points_without_vector",
    "started",
    "updated",
    "library_version",
)
_LATER = ("adaptor_sha256", "verification", "finished", "unnamed_form")
_IN_PLACE = ("mode", "added_vector", "coarse_quantization", "companion_created")


def count_key(mode: str) -> str:
    """The record key of the points written so far: ``copied`` (copy mode) or ``coarse_added`` (in place)."""
    return "coarse_added" if mode == "in_place" else "copied"


def stored_state(mode: str, state: State) -> str:
    """The state as the record spells it (``copying``/``updating`` for writing, and so on)."""
    return _STORED.get((mode, state), state.value)


@dataclass
class Checkpoint:
    """One migration's record: what it migrates, how far it got, and what it found."""

    mode: str
    """``"copy"`` or ``"in_place"``."""
    state: State
    source: str
    vector: str | None
    coarse_dim: int
    source_count: int
    started: str
    updated: str
    library_version: str
    offset: Any = None
    done: int = 0
    """Points written so far (``copied`` / ``coarse_added`` in the record)."""
    batches: int = 0
    points_without_vector: int = 0
    adaptor_sha256: str | None = None
    verification: dict[str, Any] | None = None
    finished: str | None = None
    alias: str | None = None
    """Copy mode: the alias switched to the target (with ``alias_previous``, where it pointed before)."""
    alias_previous: str | None = None
    added_vector: str | None = None
    coarse_quantization: str | None = None
    companion_created: bool = False
    unnamed_form: str | None = None
    """In place, of an unnamed vector: ``"single"`` when the config held it as one ``VectorParams``
    (rollback gives that form back), ``"named"`` when as ``{"": VectorParams}``."""
    format_version: int = MIGRATION_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def in_place(self) -> bool:
        return self.mode == "in_place"

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Checkpoint:
        """The record read from the metadata (a FormatError line for one this version cannot read)."""
        mode = "in_place" if record.get("mode") == "in_place" else "copy"
        text = record.get("state")
        state = _PARSED.get((mode, text))
        if state is None:
            try:
                state = State(text)
            except ValueError:
                raise FormatError(f"migration record: unknown state {text!r}; upgrade matryoshka-index") from None
            if state in (State.WRITING, State.WRITTEN):
                raise FormatError(f"migration record: unknown state {text!r}; upgrade matryoshka-index")
        known = set(_COMMON) | set(_LATER) | set(_IN_PLACE) | {count_key(mode), "alias", "alias_previous"}
        try:
            return cls(
                mode=mode,
                state=state,
                source=record["source"],
                vector=record.get("vector"),
                coarse_dim=int(record["coarse_dim"]),
                source_count=int(record.get("source_count", 0)),
                started=record.get("started", ""),
                updated=record.get("updated", ""),
                library_version=record.get("library_version", ""),
                offset=record.get("offset"),
                done=int(record.get(count_key(mode), 0)),
                batches=int(record.get("batches", 0)),
                points_without_vector=int(record.get("points_without_vector", 0)),
                adaptor_sha256=record.get("adaptor_sha256"),
                verification=record.get("verification"),
                finished=record.get("finished"),
                alias=record.get("alias"),
                alias_previous=record.get("alias_previous"),
                added_vector=record.get("added_vector"),
                coarse_quantization=record.get("coarse_quantization"),
                companion_created=bool(record.get("companion_created", False)),
                unnamed_form=record.get("unnamed_form"),
                format_version=int(record.get("format_version", MIGRATION_VERSION)),
                extra={k: v for k, v in record.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError):
            raise FormatError(
                "migration record: incomplete or malformed; it was not written by mindex migrate"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The record as stored: the keys of the first version, each only once it is known."""
        out: dict[str, Any] = {
            **self.extra,
            "format": MIGRATION_FORMAT,
            "format_version": self.format_version,
            "state": stored_state(self.mode, self.state),
            "source": self.source,
            "vector": self.vector,
            "coarse_dim": self.coarse_dim,
            "source_count": self.source_count,
            "offset": self.offset,
            count_key(self.mode): self.done,
            "batches": self.batches,
            "points_without_vector": self.points_without_vector,
            "started": self.started,
            "updated": self.updated,
            "library_version": self.library_version,
        }
        if self.in_place:
            out.update(
                mode="in_place",
                added_vector=self.added_vector,
                coarse_quantization=self.coarse_quantization,
                companion_created=self.companion_created,
            )
        for key in _LATER:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.alias is not None:
            out.update(alias=self.alias, alias_previous=self.alias_previous)
        return out


def is_migration_record(record: dict[str, Any] | None) -> bool:
    """Whether a metadata value is a migration record (of any mode)."""
    return record is not None and record.get("format") == MIGRATION_FORMAT


__all__ = ["MIGRATION_FORMAT", "MIGRATION_VERSION", "Checkpoint", "State", "count_key", "is_migration_record"]
