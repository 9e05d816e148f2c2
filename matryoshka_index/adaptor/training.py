"""The fit loop: neighbour-aware batches, weighted losses, validation, early stopping.

Batches are built around anchors: each anchor brings a few of its nearest neighbours (precomputed
once on the training rows), so the top-k and listwise terms see real neighbours instead of the
random strangers a uniformly sampled batch would hold.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..progress import progress
from ..threads import limited as limited_threads
from .history import TrainHistory
from .losses import (
    listwise_loss,
    pairwise_similarity_loss,
    query_listwise_loss,
    ranking_loss,
    reconstruction_loss,
    topk_similarity_loss,
)
from .model import ResidualAdaptor


@dataclass(frozen=True)
class LossWeights:
    """Weights of the training terms; a weight of 0 switches its term off."""

    pairwise: float = 1.0
    topk: float = 1.0
    reconstruction: float = 0.1
    listwise: float = 3.0
    ranking: float = 10.0
    queries: float = 3.0  # the query-to-document listwise term; on only when fit gets queries


@dataclass(frozen=True)
class TrainConfig:
    dims: tuple[int, ...]
    weights: LossWeights
    dim_weights: tuple[float, ...] | None = None  # one per prefix length of dims (MatryoshkaLoss); None: plain mean
    k: int = 10
    temperature: float = 0.05
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 512
    neighbours_per_anchor: int = 3
    epochs: int = 4
    patience: int = 2
    pair_batch_size: int = 256
    hard_negatives: int = 0
    hard_negative_pool: int = 30
    query_batch_size: int = 128  # unlabelled queries per step
    query_neighbours: int = 10  # each query's full-dim nearest corpus rows: its anchors


def nearest_neighbours(
    pool: torch.Tensor, queries: torch.Tensor, k: int, *, exclude_self: bool, chunk: int = 4096
) -> torch.Tensor:
    """Indices ``(len(queries), k)`` into ``pool`` of each query's k most similar rows (cosine).

    With ``exclude_self`` the queries are the pool itself and row i never lists i.
    """
    pool_n = torch.nn.functional.normalize(pool, dim=1)
    out = []
    for start in range(0, len(queries), chunk):
        q = torch.nn.functional.normalize(queries[start : start + chunk], dim=1)
        sim = q @ pool_n.T
        if exclude_self:
            rows = torch.arange(len(q))
            sim[rows, rows + start] = float("-inf")
        out.append(sim.topk(min(k, pool.shape[0] - int(exclude_self)), dim=1).indices)
    return torch.cat(out)


def query_anchors(rows: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(len(queries), k)`` into ``rows`` of each query's k nearest rows by full-dim cosine
    (of the vectors given: the training loop passes the model's start, each side centred with a query head).

    These rows are the training anchors of unlabelled queries: no label says which document a query
    wants, but at full dimension its nearest documents are what a search returns, so the prefix is
    trained to keep them (exact full dimension on purpose: the PCA projection the corpus neighbours
    use is what the queries are not close to).
    """
    return nearest_neighbours(rows, queries, min(k, len(rows)), exclude_self=False)


def _anchor_batches(
    n_anchors: int, anchors_per_batch: int, neighbours: torch.Tensor, per_anchor: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of batches: each a set of anchors plus ``per_anchor`` random neighbours of each."""
    order = rng.permutation(n_anchors)
    nb = neighbours.numpy()
    batches = []
    for start in range(0, n_anchors - anchors_per_batch + 1, anchors_per_batch):
        anchors = order[start : start + anchors_per_batch]
        pick = rng.integers(0, nb.shape[1], size=(len(anchors), per_anchor))
        friends = nb[anchors[:, None], pick].ravel()
        batch = np.unique(np.concatenate([anchors, friends]))
        batches.append(batch)
    return batches


class _Objective:
    """The weighted sum of the enabled terms for one batch (and optionally one batch of pairs)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def unsupervised(self, model: ResidualAdaptor, e: torch.Tensor) -> torch.Tensor:
        cfg, w = self.cfg, self.cfg.weights
        adapted = model(e)
        start = model.start(e)
        if model.has_query_head:  # its start's full-dim geometry (each side centred) is the target, see torch_model
            e = start
        total = adapted.new_zeros(())
        dims, dim_weights = cfg.dims, cfg.dim_weights
        if w.pairwise:
            total = total + w.pairwise * pairwise_similarity_loss(e, adapted, dims, dim_weights)
        if w.topk:
            total = total + w.topk * topk_similarity_loss(e, adapted, dims, cfg.k, dim_weights)
        if w.listwise:
            total = total + w.listwise * listwise_loss(e, adapted, dims, cfg.temperature, dim_weights)
        if w.reconstruction:
            total = total + w.reconstruction * reconstruction_loss(start, adapted)
        return total

    def queries(self, model: ResidualAdaptor, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Query-to-document listwise term: unlabelled queries ``q`` against corpus rows ``d``."""
        cfg = self.cfg
        adapted_q, adapted_d = model.forward_queries(q), model(d)
        if model.has_query_head:  # the target: the start's full-dim geometry, as in unsupervised()
            q, d = model.start(q, queries=True), model.start(d)
        term = query_listwise_loss(q, adapted_q, d, adapted_d, cfg.dims, cfg.temperature, cfg.dim_weights)
        return cfg.weights.queries * term

    def supervised(self, model: ResidualAdaptor, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Ranking term; ``d`` holds the ``len(q)`` positives first, then any extra (hard) negatives."""
        cfg = self.cfg
        term = ranking_loss(model.forward_queries(q), model(d), cfg.dims, cfg.temperature, cfg.dim_weights)
        return cfg.weights.ranking * term


def mine_hard_negatives(
    rows: torch.Tensor, queries: torch.Tensor, positives: torch.Tensor, pool: int, *, duplicate_cos: float = 0.999
) -> torch.Tensor:
    """Indices ``(len(queries), pool)`` into ``rows`` of each query's most similar rows at full dimension,
    skipping rows that are (near-)copies of the query's positive: the documents a short prefix most
    easily confuses with the positive (in-batch negatives are mostly easy ones)."""
    pool = min(pool, len(rows) - 1)
    cand = nearest_neighbours(rows, queries, min(len(rows), pool + 8), exclude_self=False)
    rows_n = torch.nn.functional.normalize(rows, dim=1)
    pos_n = torch.nn.functional.normalize(positives, dim=1)
    dup = torch.einsum("qkd,qd->qk", rows_n[cand], pos_n) > duplicate_cos
    # a stable sort moves the copies of the positive to the end, keeping the others in similarity order
    order = torch.sort(dup.to(torch.int8), dim=1, stable=True).indices
    return torch.gather(cand, 1, order)[:, :pool]


@limited_threads()  # torch follows the cores free during this call only (MINDEX_THREADS, affinity, load)
def train(
    model: ResidualAdaptor,
    train_rows: torch.Tensor,
    val_rows: torch.Tensor,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    train_pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    val_pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    neighbour_space: torch.Tensor | None = None,
    train_queries: torch.Tensor | None = None,
    val_queries: torch.Tensor | None = None,
    quiet: bool | None = None,
) -> TrainHistory:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch.

    ``neighbour_space`` (``d x r``), when given, projects rows before the neighbour search (a PCA
    basis makes that search several times cheaper at the same neighbour quality); the losses always
    use the exact full-dimension similarities. ``train_queries`` / ``val_queries`` (unlabelled) add
    the query-to-document term: each step takes a batch of queries against their nearest training
    rows (:func:`query_anchors`) and the step's corpus batch.
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    objective = _Objective(cfg)
    history = TrainHistory()
    model.to(device)

    proj = (lambda x: x @ neighbour_space) if neighbour_space is not None else (lambda x: x)
    train_proj = proj(train_rows)
    k_nb = max(cfg.k, cfg.neighbours_per_anchor)
    neighbours = nearest_neighbours(train_proj, train_proj, k_nb, exclude_self=True)
    per_anchor = cfg.neighbours_per_anchor
    anchors_per_batch = max(2, min(len(train_rows), cfg.batch_size // (1 + per_anchor)))

    # Validation: held-out anchors with their neighbours among the training rows, fixed once.
    val_batches: list[torch.Tensor] = []
    if len(val_rows):
        val_nb = nearest_neighbours(train_proj, proj(val_rows), k_nb, exclude_self=False)
        vrng = np.random.default_rng(seed + 1)
        for start in range(0, len(val_rows), anchors_per_batch):
            sl = slice(start, start + anchors_per_batch)
            pick = vrng.integers(0, val_nb.shape[1], size=(val_nb[sl].shape[0], per_anchor))
            friends = np.unique(val_nb[sl].numpy()[np.arange(val_nb[sl].shape[0])[:, None], pick].ravel())
            val_batches.append(torch.cat([val_rows[sl], train_rows[friends]]))

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train_rows) // anchors_per_batch)
    total_steps = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.1, anneal_strategy="cos"
    )
    n_pairs = len(train_pairs[0]) if train_pairs is not None else 0
    pair_bs = min(cfg.pair_batch_size, n_pairs) if n_pairs else 0
    train_hard = val_negatives = None
    if n_pairs and cfg.hard_negatives:
        train_hard = mine_hard_negatives(train_rows, train_pairs[0], train_pairs[1], cfg.hard_negative_pool)
        if val_pairs is not None:
            val_hard = mine_hard_negatives(train_rows, val_pairs[0], val_pairs[1], cfg.hard_negative_pool)
            # fixed per validation pair and gathered once, so validation losses compare between epochs
            val_negatives = train_rows[val_hard[:, : cfg.hard_negatives]]  # (pairs, hard_negatives, dim)

    query_steps = _QuerySteps(cfg, model, train_rows, train_queries, rng) if cfg.weights.queries else None
    val_query_steps = _QuerySteps(cfg, model, train_rows, val_queries, np.random.default_rng(seed + 2))
    val_query_batches = val_query_steps.fixed_batches() if query_steps is not None and val_query_steps.active else []

    best_val, best_state, bad_epochs = math.inf, copy.deepcopy(model.state_dict()), 0
    bar = progress(total=total_steps, desc="training adaptor", unit="step", quiet=quiet)
    try:
        for epoch in range(cfg.epochs):
            model.train()
            running, count = 0.0, 0
            pair_order = rng.permutation(n_pairs) if n_pairs else None
            pair_pos = 0
            for batch_idx in _anchor_batches(len(train_rows), anchors_per_batch, neighbours, per_anchor, rng):
                e = train_rows[torch.from_numpy(batch_idx)].to(device, non_blocking=True)
                loss = objective.unsupervised(model, e)
                if query_steps is not None and query_steps.active:
                    q, d = query_steps.next(e)
                    loss = loss + objective.queries(model, q.to(device), d.to(device))
                if n_pairs and pair_bs >= 2:
                    if pair_pos + pair_bs > n_pairs:
                        pair_order, pair_pos = rng.permutation(n_pairs), 0
                    sel = torch.from_numpy(pair_order[pair_pos : pair_pos + pair_bs])
                    pair_pos += pair_bs
                    docs = train_pairs[1][sel]
                    if train_hard is not None:
                        pick = rng.integers(0, train_hard.shape[1], size=(len(sel), cfg.hard_negatives))
                        docs = torch.cat(
                            [docs, train_rows[train_hard[sel[:, None], torch.from_numpy(pick)].reshape(-1)]]
                        )
                    loss = loss + objective.supervised(model, train_pairs[0][sel].to(device), docs.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if history.steps < total_steps:
                    sched.step()
                history.steps += 1
                running += float(loss.detach())
                count += 1
                bar.update(1)
            history.train_loss.append(running / max(1, count))

            val = _validation_loss(model, objective, val_batches, val_pairs, device, pair_bs, val_negatives)
            val += _query_validation_loss(model, objective, val_query_batches, device)
            history.val_loss.append(val)
            bar.set_postfix(val=f"{val:.4f}")
            if val < best_val - 1e-6:
                best_val, best_state, bad_epochs = val, copy.deepcopy(model.state_dict()), 0
                history.best_epoch = epoch
            else:
                bad_epochs += 1
                if bad_epochs > cfg.patience:
                    history.stopped_early = True
                    break
    finally:
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - t0
    return history


class _QuerySteps:
    """Batches of unlabelled queries, each with its anchors (nearest training rows at full dimension)."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: ResidualAdaptor,
        rows: torch.Tensor,
        queries: torch.Tensor | None,
        rng: np.random.Generator,
    ) -> None:
        self.rows, self.queries, self.rng = rows, queries, rng
        self.active = queries is not None and len(queries) >= 2
        if not self.active:
            return
        self.batch = min(cfg.query_batch_size, len(queries))
        with torch.no_grad():  # the untrained model: its start, on the CPU where the rows are
            start = copy.deepcopy(model).to("cpu").start
            self.anchors = query_anchors(start(rows), start(queries, queries=True), cfg.query_neighbours)
        self.order, self.pos = rng.permutation(len(queries)), 0

    def _docs(self, sel: np.ndarray, extra: torch.Tensor | None) -> torch.Tensor:
        docs = self.rows[torch.from_numpy(np.unique(self.anchors[torch.from_numpy(sel)].numpy()))]
        return docs if extra is None else torch.cat([docs, extra])

    def next(self, corpus_batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The next query batch and its documents: the queries' anchors plus the step's corpus batch
        (the other rows a prefix search would have to rank below the anchors)."""
        if self.pos + self.batch > len(self.order):
            self.order, self.pos = self.rng.permutation(len(self.queries)), 0
        sel = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return self.queries[torch.from_numpy(sel)], self._docs(sel, corpus_batch.cpu())

    def fixed_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every query once, in fixed batches against their anchors plus a fixed sample of rows."""
        extra = self.rows[torch.from_numpy(self.rng.choice(len(self.rows), min(512, len(self.rows)), replace=False))]
        out = []
        for start in range(0, len(self.queries), self.batch):
            sel = np.arange(start, min(start + self.batch, len(self.queries)))
            out.append((self.queries[torch.from_numpy(sel)], self._docs(sel, extra)))
        return out


@torch.no_grad()
def _query_validation_loss(
    model: ResidualAdaptor,
    objective: _Objective,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> float:
    model.eval()
    losses = [float(objective.queries(model, q.to(device), d.to(device))) for q, d in batches]
    return float(np.mean(losses)) if losses else 0.0


@torch.no_grad()
def _validation_loss(
    model: ResidualAdaptor,
    objective: _Objective,
    val_batches: Sequence[torch.Tensor],
    val_pairs: tuple[torch.Tensor, torch.Tensor] | None,
    device: torch.device,
    pair_bs: int,
    val_negatives: torch.Tensor | None = None,
) -> float:
    model.eval()
    losses = [float(objective.unsupervised(model, b.to(device))) for b in val_batches]
    total = float(np.mean(losses)) if losses else 0.0
    if val_pairs is not None and len(val_pairs[0]) >= 2:
        bs = max(2, pair_bs or len(val_pairs[0]))
        sup = []
        for s in range(0, len(val_pairs[0]) - 1, bs):
            q, d = val_pairs[0][s : s + bs], val_pairs[1][s : s + bs]
            if len(q) < 2:
                continue
            if val_negatives is not None:
                d = torch.cat([d, val_negatives[s : s + bs].reshape(-1, d.shape[1])])
            sup.append(float(objective.supervised(model, q.to(device), d.to(device))))
        total += float(np.mean(sup)) if sup else 0.0
    return total
