"""Kill -9 at random moments, then check what is left: the pieces shared by ``faults.py`` and the tests.

Each operation (:data:`OPERATIONS`) is a real process (``mindex ...`` or a small Python program)
that prints ``START`` once its imports are done (the modules the operation needs imported first, so
the window is the work, not the imports) and ``DONE`` when the operation returns; the harness waits
for START, sleeps a seeded random delay drawn over the operation's measured duration and sends
SIGKILL. A kill **landed** when the process was alive when killed and had not printed DONE: a kill
that came after the end of the work tests nothing, and is counted apart (``missed_draws``, redrawn
shorter when asked). Then it checks:

- **intact**: what is on disk loads (checksums verified) and gives exactly the results of either
  the state before the operation or the state an uninterrupted run produces (same ``(D, I)`` on
  fixed queries; for an adaptor the same transform; for a migration every point, payload and
  vector of the source unchanged);
- **resumed identical**: the next run (``--resume`` for a migration, a plain rerun otherwise)
  finishes to a state identical to an uninterrupted run's (every point, payload and vector;
  vectors within 1e-6 where qdrant-client's local mode re-normalises Cosine vectors);
- **leftovers**: ``.NAME.*.tmp`` / ``.NAME.*.old`` anywhere under the work folder and
  ``mindex-*`` in the private temporary folder, counted after that next successful run. The
  harness reports what it sees; it does not clean up (another change adds sweeping).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_ROWS, DIM, COARSE = 2000, 64, 16

# START once the imports are done, DONE once the operation is (before the interpreter's own teardown,
# which under load can take longer than the operation and must not widen the window kills are drawn over).
CLI_CHILD = (
    "import sys\nfrom matryoshka_index.cli import main\nprint('START', flush=True)\n"
    "try:\n    main(sys.argv[1:], prog_name='mindex')\nfinally:\n    print('DONE', flush=True)\n"
)
# What the index commands import lazily: imported before START, so kills are drawn over the work.
INDEX_MODULES = ("matryoshka_index.index", "matryoshka_index.backends.faiss_backend", "faiss")


def cli_child(*modules: str) -> str:
    """:data:`CLI_CHILD` with ``modules`` imported before START."""
    return "".join(f"import {m}\n" for m in modules) + CLI_CHILD


# A save of the test's indexes writes a few small files in ~0.01 s, too short for a kill to land at
# a chosen moment; each fsync pauses first (after the write, before the fsync and the rename that
# follow), so the save lasts ~0.3 s (17 fsyncs) and kills land between its steps.
SAVE_FSYNC_PAUSE_S = 0.02
SAVE_CHILD = (
    "import os, sys, time\nfrom matryoshka_index import MatryoshkaIndex\nidx = MatryoshkaIndex.load(sys.argv[1])\n"
    "_fsync = os.fsync\n"
    f"def _paused_fsync(fd):\n    time.sleep({SAVE_FSYNC_PAUSE_S})\n    _fsync(fd)\n"
    "os.fsync = _paused_fsync\n"
    "print('START', flush=True)\nidx.save(sys.argv[2])\nprint('DONE', flush=True)\n"
)


# ----------------------------------------------------------------------------------------- data


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit rows near a 12-dim subspace plus noise: neighbours are meaningful, calibration has work to do."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(1234).standard_normal((12, dim))
    return unit(rng.standard_normal((n, 12)) @ basis + 0.3 * rng.standard_normal((n, dim)))


def write_data(root: Path, n: int = N_ROWS, dim: int = DIM) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = {name: root / f"{name}.npy" for name in ("corpus_a", "corpus_b", "queries", "calib")}
    np.save(paths["corpus_a"], synthetic(n, dim, 1))
    np.save(paths["corpus_b"], synthetic(n, dim, 2))
    np.save(paths["queries"], synthetic(64, dim, 3))
    np.save(paths["calib"], synthetic(400, dim, 4))
    return paths


# ------------------------------------------------------------------------------------ processes


def child_env(tmp: Path) -> dict[str, str]:
    """The environment of a killed child: this tree first on the path, its own temporary folder, quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(TMPDIR=str(tmp), MINDEX_QUIET="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


@dataclass
class Run:
    returncode: int | None  # None: killed
    started_s: float  # seconds from launch to START (the imports)
    ran_s: float  # seconds from START to the kill or the exit
    stderr: str
    landed: bool = False  # SIGKILLed while alive and before DONE: the kill hit the operation itself


def run_child(code: str, args: list[str], tmp: Path, *, kill_after: float | None, timeout: float = 600.0) -> Run:
    """Run ``python -c code *args``; ``kill_after`` seconds after it prints START, SIGKILL it."""
    t0 = time.perf_counter()
    # Unbuffered bytes: readline() then takes START and nothing after it, so a DONE written right behind
    # it is still in the pipe for communicate() (a text pipe's buffer would swallow it: a late kill
    # would then count as landed).
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=child_env(tmp),
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace")
    t_start = time.perf_counter()
    if line.strip() != "START":
        _, err = proc.communicate(timeout=timeout)
        return Run(proc.returncode, t_start - t0, 0.0, err.decode(errors="replace") + line)
    if kill_after is None:  # measuring: the time to DONE
        while line := proc.stdout.readline().decode(errors="replace"):
            if line.strip() == "DONE":
                break
        done = time.perf_counter() - t_start
        _, err = proc.communicate(timeout=timeout)
        return Run(proc.returncode, t_start - t0, done, err.decode(errors="replace"))
    sent = False
    try:
        proc.wait(kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)  # polls first: never signals a process already reaped
        sent = True
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    ran = time.perf_counter() - t_start
    # The child prints DONE the moment the operation returns; seen after the kill, the kill came too late.
    killed = sent and proc.returncode == -signal.SIGKILL
    landed = killed and "DONE" not in out.decode(errors="replace").split()
    return Run(None if killed else proc.returncode, t_start - t0, ran, err.decode(errors="replace"), landed)


@contextlib.contextmanager
def private_tempdir(tmp: Path) -> Iterator[None]:
    """In-process runs put their temporaries where the children do, so that leftovers are counted."""
    old_env, old_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(tmp), str(tmp)
    try:
        yield
    finally:
        tempfile.tempdir = old_tempdir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env


def leftovers(work: Path, tmp: Path) -> list[str]:
    """Temporaries left behind: ``.NAME.*.tmp`` / ``.NAME.*.old`` under ``work``, ``mindex-*`` in ``tmp``."""
    found = []
    for p in work.rglob(".*"):
        if p.name.endswith((".tmp", ".old")) and tmp not in p.parents:
            found.append(str(p.relative_to(work)))
    if tmp.exists():
        found += [f"$TMPDIR/{p.name}" for p in tmp.iterdir() if p.name.startswith("mindex-")]
    return sorted(found)


def cli(args: list[str]) -> None:
    """Run a ``mindex`` command in this process (the code path of the killed child, without its imports)."""
    import io

    from matryoshka_index.cli import main

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the JSON summaries
            main(args, prog_name="mindex", standalone_mode=False)
    except SystemExit as exc:  # user_errors exits 2 with its line on stderr
        if exc.code not in (0, None):
            raise RuntimeError(f"mindex {' '.join(args)} exited {exc.code}") from None


# ------------------------------------------------------------------------------- fingerprints


def index_fingerprint(path: Path, queries: np.ndarray) -> tuple:
    """What an index answers: (candidates, ids, scores) on fixed queries, after a verified load."""
    from matryoshka_index import MatryoshkaIndex

    idx = MatryoshkaIndex.load(path, verify=True)
    scores, ids = idx.search(queries, k=10)
    return ("index", idx.candidates, ids.tobytes(), np.round(scores, 5).tobytes())


def adaptor_fingerprint(path: Path, queries: np.ndarray) -> tuple:
    from matryoshka_index import MatryoshkaAdaptor

    out = MatryoshkaAdaptor.load(path, device="cpu").transform(queries)
    return ("adaptor", np.round(out, 4).tobytes())


def same(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a == b


def dump_collection(path: Path, name: str) -> list[tuple]:
    """Every point (id, payload, vectors) of a local-mode collection, in id order."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(path))
    try:
        return dump_client(client, name)
    finally:
        client.close()


def dump_client(client: Any, name: str) -> list[tuple]:
    from qdrant_client import models as qm

    out, offset = [], None
    while True:
        records, offset = client.scroll(name, limit=1024, offset=offset, with_payload=True, with_vectors=True)
        for r in records:
            vecs = r.vector if isinstance(r.vector, dict) else {"": r.vector}
            vecs = {k: (v.model_dump() if isinstance(v, qm.SparseVector) else v) for k, v in vecs.items()}
            out.append((str(r.id), r.payload, vecs))
        if offset is None:
            return sorted(out, key=lambda t: t[0])


def points_equal(a: list[tuple], b: list[tuple], *, skip: tuple[str, ...] = (), atol: float = 1e-6) -> str | None:
    """None when every id, payload and vector agrees (vectors within ``atol``); else what differs first."""
    if [p[0] for p in a] != [p[0] for p in b]:
        return f"ids differ ({len(a)} vs {len(b)} points)"
    for (pid, pa, va), (_, pb, vb) in zip(a, b, strict=True):
        if pa != pb:
            return f"payload of {pid} differs"
        ka, kb = set(va) - set(skip), set(vb) - set(skip)
        if ka != kb:
            return f"vectors of {pid}: {sorted(ka)} vs {sorted(kb)}"
        for k in ka:
            x, y = va[k], vb[k]
            if isinstance(x, dict) or isinstance(y, dict):
                if x != y:
                    return f"vector {k!r} of {pid} differs"
            elif not np.allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0):
                return f"vector {k!r} of {pid} differs by {np.abs(np.asarray(x) - np.asarray(y)).max():.2e}"
    return None


def collection_vectors_config(path: Path, name: str) -> Any:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(path))
    try:
        return client.get_collection(name).config.params.vectors
    finally:
        client.close()


def make_source(path: Path, n: int, dim: int = DIM, seed: int = 5) -> None:
    """A local-mode collection 'src': named Cosine vector 'emb', a Dot vector 'img', payloads, int and UUID ids."""
    import uuid

    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    emb = synthetic(n, dim, seed)
    img = np.random.default_rng(seed + 1).standard_normal((n, 4)).astype(np.float32)
    client = QdrantClient(path=str(path))
    try:
        client.create_collection(
            "src",
            vectors_config={
                "emb": qm.VectorParams(size=dim, distance=qm.Distance.COSINE),
                "img": qm.VectorParams(size=4, distance=qm.Distance.DOT),
            },
        )
        points = [
            qm.PointStruct(
                id=i * 7 if i % 2 else str(uuid.uuid5(uuid.NAMESPACE_URL, f"doc/{i}")),
                vector={"emb": emb[i].tolist(), "img": img[i].tolist()},
                payload={"i": i, "title": f"Dokument №{i}", "tags": ["a", str(i % 5)], "nested": {"x": i / 7}},
            )
            for i in range(n)
        ]
        client.upsert("src", points)
    finally:
        client.close()


# --------------------------------------------------------------------------------- operations


@dataclass
class Outcome:
    """One kill cycle."""

    delay_s: float
    killed: bool  # the process was alive when SIGKILLed
    landed: bool  # ... and had not finished the operation (no DONE): the kill hit the work
    missed_draws: int  # earlier draws of this cycle that came after the work had finished (redrawn)
    intact: bool
    state: str  # "before", "after" (the kill came after the commit point) or what broke
    resumed_identical: bool
    resume_note: str
    leftovers_after_kill: list[str]
    leftovers: list[str]  # after the next successful run

    def to_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass
class Operation:
    """A killable operation: ``prepare`` once, then cycles of ``kill`` / ``check`` / ``finish``."""

    name: str
    work: Path
    data: dict[str, Path]
    refs: dict[str, Any] = field(default_factory=dict)
    cycle: int = 0

    @property
    def tmp(self) -> Path:
        p = self.work / "tmp"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def child(self) -> tuple[str, list[str]]:  # the code and arguments of the process to kill
        raise NotImplementedError

    def prepare(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:  # before a kill: the "before" state in place
        pass

    def undo(self) -> None:  # after a child that finished before its kill: the "before" state back
        pass

    def check(self) -> tuple[bool, str]:  # after a kill: intact?, which state
        raise NotImplementedError

    def finish(self) -> tuple[bool, str]:  # the next run to completion: identical to an uninterrupted run?
        raise NotImplementedError


def _state_of(fp_now: Any, before: Any, after: Any) -> tuple[bool, str]:
    if same(fp_now, before):
        return True, "before"
    if same(fp_now, after):
        return True, "after"
    return False, "results differ from both the previous and the new state"


class _Alternating(Operation):
    """An operation that replaces state X by state Y at one path; cycles alternate A->B, B->A."""

    target_name = "out"

    @property
    def target(self) -> Path:
        return self.work / self.target_name

    def sides(self) -> tuple[str, str]:
        return ("a", "b") if self.cycle % 2 == 0 else ("b", "a")

    def fingerprint(self) -> Any:
        return index_fingerprint(self.target, np.load(self.data["queries"]))

    def produce(self, side: str) -> None:  # uninterrupted, in this process
        raise NotImplementedError

    def prepare(self) -> None:
        with private_tempdir(self.tmp):
            for side in ("b", "a"):  # ends with A in place: cycle 0 goes A -> B
                self.produce(side)
                self.refs[side] = self.fingerprint()

    def current(self) -> str:
        return self.sides()[0]

    def undo(self) -> None:
        with private_tempdir(self.tmp):
            self.produce(self.sides()[0])

    def check(self) -> tuple[bool, str]:
        before, after = self.sides()
        try:
            fp = self.fingerprint()
        except Exception as exc:  # a broken state is the finding, whatever it raises
            return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return _state_of(fp, self.refs[before], self.refs[after])

    def finish(self) -> tuple[bool, str]:
        _, after = self.sides()
        try:
            with private_tempdir(self.tmp):
                self.produce(after)
            ok = same(self.fingerprint(), self.refs[after])
            return ok, "rerun" if ok else "rerun gives other results than an uninterrupted run"
        except Exception as exc:
            return False, f"rerun failed: {type(exc).__name__}: {exc}"


def build_args(corpus: Path, out: Path) -> list[str]:
    """``mindex build CORPUS --coarse-dim COARSE --pca -q -o OUT``: the index every operation starts from."""
    return ["build", str(corpus), "--coarse-dim", str(COARSE), "--pca", "-q", "-o", str(out)]


class BuildOver(_Alternating):
    """``mindex build CORPUS -o IDX --pca`` over an existing index."""

    def args(self, side: str) -> list[str]:
        return build_args(self.data[f"corpus_{side}"], self.target)

    def produce(self, side: str) -> None:
        cli(self.args(side))

    def child(self) -> tuple[str, list[str]]:
        return cli_child(*INDEX_MODULES), self.args(self.sides()[1])


class SaveOver(_Alternating):
    """``index.save(DIR)`` over an existing index directory."""

    def prepare(self) -> None:
        with private_tempdir(self.tmp):
            for side in ("a", "b"):
                cli(build_args(self.data[f"corpus_{side}"], self.work / f"src_{side}"))
        super().prepare()

    def produce(self, side: str) -> None:
        from matryoshka_index import MatryoshkaIndex

        MatryoshkaIndex.load(self.work / f"src_{side}").save(self.target)

    def child(self) -> tuple[str, list[str]]:
        return SAVE_CHILD, [str(self.work / f"src_{self.sides()[1]}"), str(self.target)]


class TrainOver(_Alternating):
    """``mindex train CORPUS -o ADAPTOR`` over an existing adaptor."""

    def args(self, side: str) -> list[str]:
        return [
            "train",
            str(self.data[f"corpus_{side}"]),
            "--epochs",
            "1",
            "--dims",
            "8,16",
            "--seed",
            "0",
            "--max-samples",
            "600",
            "--batch-size",
            "128",
            "--device",
            "cpu",
            "-q",
            "-o",
            str(self.target),
        ]

    def fingerprint(self) -> Any:
        return adaptor_fingerprint(self.target, np.load(self.data["queries"]))

    def produce(self, side: str) -> None:
        cli(self.args(side))

    def child(self) -> tuple[str, list[str]]:
        return cli_child("torch", "matryoshka_index.adaptor.training"), self.args(self.sides()[1])


class Calibrate(_Alternating):
    """``mindex calibrate IDX QUERIES`` (rewrites the index), alternating two recall targets."""

    targets: ClassVar[dict[str, str]] = {"a": "0.9", "b": "0.99"}

    def args(self, side: str) -> list[str]:
        return ["calibrate", str(self.target), str(self.data["calib"]), "--target-recall", self.targets[side], "-q"]

    def prepare(self) -> None:
        with private_tempdir(self.tmp):
            cli(["build", str(self.data["corpus_a"]), "--coarse-dim", "8", "--pca", "-q", "-o", str(self.target)])
        super().prepare()

    def produce(self, side: str) -> None:
        cli(self.args(side))

    def child(self) -> tuple[str, list[str]]:
        return cli_child(*INDEX_MODULES), self.args(self.sides()[1])


MIGRATE_MODULES = ("matryoshka_index.migrate", "qdrant_client", *INDEX_MODULES)


class _Migration(Operation):
    """A local-mode migration, killed on a fresh copy of a prepared storage folder each cycle."""

    points = 200

    @property
    def storage(self) -> Path:
        return self.work / "storage"

    @property
    def pristine(self) -> Path:
        return self.work / "pristine"

    def base_args(self) -> list[str]:
        return [
            "migrate",
            "--qdrant-path",
            str(self.storage),
            "--collection",
            "src",
            "--vector",
            "emb",
            "--coarse-dim",
            str(COARSE),
            "--adaptor",
            str(self.work / "adaptor"),
            "--verify",
            "full",
            "--recall-queries",
            "10",
            "--batch-size",
            "64",
            "--json",
            "-q",
        ]

    def mode_args(self) -> list[str]:
        return []

    def reference_dir(self) -> Path:
        return self.work / "reference"

    def prepare(self) -> None:
        from matryoshka_index import MatryoshkaAdaptor

        make_source(self.pristine, self.points, dim=int(np.load(self.data["corpus_a"], mmap_mode="r").shape[1]))
        MatryoshkaAdaptor(matryoshka_dims=[8, COARSE, 32], epochs=1, batch_size=128, device="cpu", quiet=True).fit(
            np.load(self.data["corpus_a"])
        ).save(self.work / "adaptor")
        self.refs["source"] = dump_collection(self.pristine, "src")
        self.refs["source_config"] = collection_vectors_config(self.pristine, "src")
        self.reset()
        with private_tempdir(self.tmp):
            cli(self.base_args() + self.mode_args())
        shutil.copytree(self.storage, self.reference_dir(), dirs_exist_ok=False)
        self.refs["result"] = self.result_dump(self.storage)

    def result_dump(self, storage: Path) -> list[tuple]:
        raise NotImplementedError

    def reset(self) -> None:
        shutil.rmtree(self.storage, ignore_errors=True)
        shutil.copytree(self.pristine, self.storage)

    def child(self) -> tuple[str, list[str]]:
        return cli_child(*MIGRATE_MODULES), self.base_args() + self.mode_args()

    def check(self) -> tuple[bool, str]:
        try:
            now = dump_collection(self.storage, "src")
        except Exception as exc:
            return False, f"source unreadable: {type(exc).__name__}: {exc}"
        diff = points_equal(now, self.refs["source"], skip=("coarse",))
        return (True, "source unchanged") if diff is None else (False, f"source changed: {diff}")

    def finish(self) -> tuple[bool, str]:
        note = "--resume"
        try:
            with private_tempdir(self.tmp):
                try:
                    cli(self.base_args() + self.mode_args() + ["--resume"])
                except RuntimeError:  # killed before any checkpoint: nothing to resume, start again
                    note = "fresh run (nothing to resume)"
                    cli(self.base_args() + self.mode_args())
            diff = points_equal(self.result_dump(self.storage), self.refs["result"])
        except Exception as exc:
            return False, f"{note} failed: {type(exc).__name__}: {exc}"
        return (diff is None), note if diff is None else f"{note}: {diff}"


class MigrateCopy(_Migration):
    """``mindex migrate`` (copy mode) then ``--resume``; the result is the target collection."""

    def result_dump(self, storage: Path) -> list[tuple]:
        return dump_collection(storage, "src_matryoshka")


class MigrateInPlace(_Migration):
    """``mindex migrate --in-place`` then ``--in-place --resume``; the result is the collection itself."""

    def mode_args(self) -> list[str]:
        return ["--in-place"]

    def result_dump(self, storage: Path) -> list[tuple]:
        return dump_collection(storage, "src")


class Rollback(MigrateInPlace):
    """``mindex migrate --rollback`` of a finished in-place migration, then ``--rollback`` again."""

    def prepare(self) -> None:
        super().prepare()  # the reference is a finished in-place migration: that is the "before" here
        shutil.rmtree(self.pristine)
        shutil.copytree(self.reference_dir(), self.pristine)
        self.refs["result"] = self.refs["source"]

    def _rolled_back(self) -> str | None:
        diff = points_equal(dump_collection(self.storage, "src"), self.refs["result"])
        if diff is None and collection_vectors_config(self.storage, "src") != self.refs["source_config"]:
            diff = "the vectors config differs from the original"
        return diff

    def rollback_args(self) -> list[str]:
        return ["migrate", "--qdrant-path", str(self.storage), "--collection", "src", "--rollback", "-q"]

    def child(self) -> tuple[str, list[str]]:
        return cli_child(*MIGRATE_MODULES), self.rollback_args()

    def finish(self) -> tuple[bool, str]:
        try:
            with private_tempdir(self.tmp):
                try:
                    cli(self.rollback_args())
                except RuntimeError:  # refused: right only when the killed rollback had already finished
                    diff = self._rolled_back()
                    if diff is None:
                        return True, "already rolled back before the kill (--rollback again refuses, rightly)"
                    raise RuntimeError(f"--rollback refused on a state that is not rolled back ({diff})") from None
            diff = points_equal(dump_collection(self.storage, "src"), self.refs["result"])
            if diff is None and collection_vectors_config(self.storage, "src") != self.refs["source_config"]:
                diff = "the vectors config differs from the original"
        except Exception as exc:
            return False, f"--rollback again failed: {type(exc).__name__}: {exc}"
        return (diff is None), "--rollback again" if diff is None else f"--rollback again: {diff}"


OPERATIONS: dict[str, type[Operation]] = {
    "build": BuildOver,
    "save": SaveOver,
    "train": TrainOver,
    "calibrate": Calibrate,
    "migrate-copy": MigrateCopy,
    "migrate-in-place": MigrateInPlace,
    "migrate-rollback": Rollback,
}


def measure(op: Operation, runs: int = 2) -> float:
    """Seconds from START to DONE of an uninterrupted child, the fastest of ``runs`` (the window the
    kills are drawn over)."""
    times = []
    for _ in range(runs):  # the first run reads everything cold
        op.reset()
        run = run_child(*op.child(), op.tmp, kill_after=None)
        if run.returncode != 0:
            raise RuntimeError(f"{op.name}: the uninterrupted run failed ({run.returncode}): {run.stderr[-2000:]}")
        times.append(run.ran_s)
        if isinstance(op, _Alternating):
            op.cycle += 1
    op.cycle = 0
    return min(times)


def kill_cycles(
    op: Operation,
    kills: int,
    *,
    seed: int = 0,
    duration: float | None = None,
    redraws: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[float, list[Outcome]]:
    """``kills`` cycles of kill / check / finish; the delays are uniform over the measured duration.

    A draw that came after the work had finished (the child printed DONE or exited first) tests nothing:
    with ``redraws`` the cycle puts the previous state back and tries again up to that many times, each
    with a delay drawn below the one that missed; each cycle reports whether its kill landed and how many
    draws missed."""
    duration = measure(op) if duration is None else duration
    op.cycle = 0
    if isinstance(op, _Alternating):  # the measuring run left the "after" state of cycle 0: start again
        with private_tempdir(op.tmp):
            op.produce("a")
    rng = random.Random(seed)
    outcomes = []
    for i in range(kills):
        op.cycle = i
        delay = rng.uniform(0.0, duration)
        missed = 0
        while True:
            op.reset()
            run = run_child(*op.child(), op.tmp, kill_after=delay)
            if run.landed or missed >= redraws:
                break
            missed += 1
            op.undo()  # the operation ran to its end: its "before" state back for the next draw
            delay = rng.uniform(0.0, delay)
        intact, state = op.check()
        after_kill = leftovers(op.work, op.tmp)
        identical, note = op.finish()
        out = Outcome(
            delay_s=delay,
            killed=run.returncode is None,
            landed=run.landed,
            missed_draws=missed,
            intact=intact,
            state=state,
            resumed_identical=identical,
            resume_note=note,
            leftovers_after_kill=after_kill,
            leftovers=leftovers(op.work, op.tmp),
        )
        if run.returncode not in (None, 0):
            out.state += f" (the child exited {run.returncode}: {run.stderr.strip().splitlines()[-1:]})"
        outcomes.append(out)
        if not (intact and identical):
            log(f"  {op.name} kill {i} at {delay:.3f}s: intact={intact} ({state}); resume: {note}")
    return duration, outcomes


def summarise(name: str, duration: float, outcomes: list[Outcome]) -> dict:
    return {
        "operation": name,
        "duration_s": round(duration, 3),
        "kills": sum(o.killed for o in outcomes),
        "landed": sum(o.landed for o in outcomes),
        "missed_draws": sum(o.missed_draws for o in outcomes),
        "cycles": len(outcomes),
        "intact": sum(o.intact for o in outcomes),
        "committed_before_kill": sum(o.state == "after" for o in outcomes),
        "resumed_identical": sum(o.resumed_identical for o in outcomes),
        "leftovers_after_kill": sum(len(o.leftovers_after_kill) for o in outcomes),
        "cycles_with_leftovers_after_next_run": sum(bool(o.leftovers) for o in outcomes),
        "leftover_examples": sorted({x for o in outcomes for x in o.leftovers})[:8],
        "failures": [o.to_dict() for o in outcomes if not (o.intact and o.resumed_identical)][:10],
    }


def json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=json_default)


# ------------------------------------------------------------------------------- hostile input


def one_line_error(returncode: int | None, stderr: str) -> bool:
    """Exit 2 and exactly one non-empty stderr line, an ``Error: ...`` (no traceback)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return returncode == 2 and len(lines) == 1 and lines[0].startswith("Error:")


def run_cli_process(args: list[str], tmp: Path, timeout: float = 300.0) -> tuple[int, str, str]:
    """``mindex ARGS`` in a fresh process (a SIGBUS or a hang cannot take the harness down)."""
    tmp.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-c", CLI_CHILD, *args],
        capture_output=True,
        text=True,
        env=child_env(tmp),
        cwd=ROOT,
        timeout=timeout,
    )
    return out.returncode, out.stdout.replace("START\n", "").replace("DONE\n", ""), out.stderr


def damaged_copies(src: Path, dest: Path) -> Iterator[tuple[str, Path]]:
    """For every file of ``src``: a copy of the folder with that file truncated to half, then one with a byte flipped."""
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    for rel in files:
        for how in ("truncated", "flipped"):
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest)
            target = dest / rel
            data = bytearray(target.read_bytes())
            if how == "truncated":
                data = data[: len(data) // 2]
            elif data:
                data[len(data) // 2] ^= 0x01
            target.write_bytes(bytes(data))
            yield f"{rel} {how}", dest


def future_manifest(src: Path, dest: Path, name: str = "manifest.json", key: str = "format_version") -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest)
    meta = json.loads((dest / name).read_text())
    meta[key] = int(meta.get(key, 1)) + 98
    (dest / name).write_text(json.dumps(meta))
    return dest
