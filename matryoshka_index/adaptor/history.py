"""``TrainHistory`` without torch: what ``load`` restores from ``adaptor.json`` needs no training code."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TrainHistory"]


@dataclass
class TrainHistory:
    """What happened during fit: per-epoch losses, the epoch kept, and time spent."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    steps: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    # the held-out guard (adaptor/guard.py): its measurement, and whether fit kept the start instead
    guard: dict | None = None
    fell_back_to_start: bool = False
    # a supervised fit's comparison of its candidates on the held-out pairs (estimator._select), and
    # whether the unsupervised one (the same queries, unlabelled) won it
    selection: dict | None = None
    fell_back_to_unsupervised: bool = False

    def to_dict(self) -> dict:
        return {
            "train_loss": [round(v, 6) for v in self.train_loss],
            "val_loss": [round(v, 6) for v in self.val_loss],
            "best_epoch": self.best_epoch,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "stopped_early": self.stopped_early,
            "guard": self.guard,
            "fell_back_to_start": self.fell_back_to_start,
            "selection": self.selection,
            "fell_back_to_unsupervised": self.fell_back_to_unsupervised,
        }
