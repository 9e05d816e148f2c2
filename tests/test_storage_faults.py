"""Storage under faults (issue 15): full disks, killed writers, the swap window, symlinks, memory maps.

Each test here failed before its fix: writes through memory maps died with SIGBUS on a full disk,
temporaries of killed processes stayed forever, a kill between the two renames of a directory swap
left the name empty, a symlinked output was replaced by a directory, and a streaming check kept a
whole memory-mapped corpus resident.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from faultfs import NO_FALLOCATE, leftovers, python, small_fs

from matryoshka_index import storage
from matryoshka_index.errors import StorageError
from matryoshka_index.validation import check_embeddings, l2_normalize

TMPDIR_ENV = "MINDEX_TMPDIR"  # the documented setting: where spill files and work directories go


@pytest.fixture(autouse=True)
def _private_tmpdir(tmp_path, monkeypatch):
    """Work directories of these tests go to their own folder (never sweep the shared /tmp)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv(TMPDIR_ENV, str(work))


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# ---------------------------------------------------------------------- 1. disk full: ENOSPC, never SIGBUS
def test_save_npy_on_a_full_tmpfs_raises_one_line_and_leaves_nothing(tmp_path):
    with small_fs(tmp_path / "small", "1m") as fs:
        # In a child process: before the fix this died with SIGBUS (a write through open_memmap).
        r = python(
            "import numpy as np\nfrom matryoshka_index.storage import save_npy\nfrom matryoshka_index.errors import StorageError\n"
            f"try:\n    save_npy({str(fs / 'big.npy')!r}, np.ones((1000, 512), np.float32))\n"
            "except StorageError as e:\n    print('ERR', e)\n"
        )
        assert r.returncode == 0, (r.returncode, r.stderr)
        assert r.stdout.startswith("ERR ") and "no space left" in r.stdout and "needed" in r.stdout
        assert len(r.stdout.strip().splitlines()) == 1
        assert list(fs.iterdir()) == []


def test_spill_file_on_a_full_tmpfs_raises_instead_of_sigbus(tmp_path):
    with small_fs(tmp_path / "small", "1m") as fs:
        r = python(
            "import numpy as np\nfrom matryoshka_index.backends.faiss_backend import FaissBackend\n"
            "from matryoshka_index.errors import StorageError\n"
            f"b = FaissBackend.create(coarse_dim=8, full_dim=256, spill_dir={str(fs)!r})\n"
            "x = np.random.default_rng(0).standard_normal((4000, 256)).astype(np.float32)\n"
            "x /= np.linalg.norm(x, axis=1, keepdims=True)\n"
            "try:\n    b.add(np.arange(4000), x[:, :8].copy(), x)\nexcept StorageError as e:\n    print('ERR', e)\n"
        )
        assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
        assert r.stdout.startswith("ERR ") and "no space left" in r.stdout


def test_injected_enospc_from_fallocate_is_one_line_and_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "posix_fallocate", _enospc)
    with pytest.raises(StorageError, match="no space left on the device"):
        storage.save_npy(tmp_path / "x.npy", np.ones((100, 8), np.float32))
    with pytest.raises(StorageError, match="no space left"):
        storage.atomic_write_bytes(tmp_path / "y.bin", b"abc")
    assert sorted(os.listdir(tmp_path)) == ["work"]


def test_injected_enospc_at_a_write_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "posix_fallocate", lambda *a: None)  # a file system that reserves nothing
    real_write = os.write

    def failing_write(fd, data):
        if len(data) > 1000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(StorageError, match="no space left"):
        storage.save_npy(tmp_path / "x.npy", np.ones((1000, 8), np.float32))
    assert sorted(os.listdir(tmp_path)) == ["work"]


def test_spill_growth_that_does_not_fit_doubled_takes_only_what_it_needs(monkeypatch):
    from matryoshka_index.backends.faiss_backend import FaissBackend

    real = os.posix_fallocate
    limit = 3000 * 16 * 4  # room for 3,000 rows, not for the doubling to 4,096

    def fallocate(fd, offset, size):
        if offset + size > limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, size)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    b = FaissBackend.create(coarse_dim=4, full_dim=16)
    x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    b.add(np.arange(2000), x[:2000, :4].copy(), x[:2000])
    b.add(np.arange(2000, 3000), x[2000:, :4].copy(), x[2000:])
    np.testing.assert_array_equal(b._full.spill.array, x)
    with pytest.raises(StorageError, match="no space left"):
        b.add(np.arange(3000, 3001), x[:1, :4].copy(), x[:1])


def _no_fallocate(*args, **kwargs):
    raise OSError(errno.EOPNOTSUPP, "Operation not supported")


def test_preallocate_reports_no_fallocate_and_checks_the_free_space(tmp_path, monkeypatch):
    """Issue 19, item 2: where the file system cannot reserve space, preallocate says so (False) and
    checks the free space instead (before: it returned silently, and a spill file's writes through its
    map could SIGBUS on a full disk)."""
    path = tmp_path / "f.bin"
    with open(path, "wb") as fh:
        assert storage.preallocate(fh.fileno(), 4096, path) is True  # this disk reserves
        monkeypatch.setattr(os, "posix_fallocate", _no_fallocate)
        assert storage.preallocate(fh.fileno(), 4096, path) is False  # room, but nothing reserved
        free = 1 << 20
        monkeypatch.setattr(storage.disk.shutil, "disk_usage", lambda p: type("U", (), {"free": free})())
        with pytest.raises(StorageError) as info:
            storage.preallocate(fh.fileno(), 8 << 20, path)
    msg = str(info.value)
    assert "cannot reserve space" in msg and "needs about" in msg and "1.0 MiB is free" in msg and "\n" not in msg


def test_spill_file_is_written_with_ordinary_writes_never_a_writable_map(tmp_path, monkeypatch):
    """Issue 19, item 2: the spill file is read through a read-only map only (before: ``np.memmap(mode="r+")``)."""
    from matryoshka_index.backends.faiss_store import SpillFile

    real_memmap = np.memmap

    def no_writable_maps(filename, dtype=np.uint8, mode="r+", *args, **kwargs):
        assert mode in ("r", "c"), f"writable memory map of {filename}: a full disk would SIGBUS"
        return real_memmap(filename, dtype, mode, *args, **kwargs)

    monkeypatch.setattr(np, "memmap", no_writable_maps)
    spill = SpillFile(16, str(tmp_path))
    x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    first = spill.array
    for lo in range(0, 3000, 700):  # grows 1,024 -> 2,048 -> 4,096 rows
        spill.append(x[lo : lo + 700])
    np.testing.assert_array_equal(spill.array, x)
    assert not spill.array.flags.writeable and len(first) == 0
    if Path("/proc/self/smaps").exists():
        flags = _vm_flags(Path(spill.path))
        assert flags and "mw" not in flags, flags  # the kernel's own word: no mapping of it may write
    spill.close()
    assert not Path(spill.dir).exists()


def test_spill_file_on_a_full_disk_without_fallocate_is_one_line_not_sigbus(tmp_path):
    """Issue 19, item 2: a 1 MB tmpfs whose fallocate is made to report no support: the build's spill
    file fails in one line from the free-space check (before: preallocate returned silently and the
    write through the map died with SIGBUS)."""
    with small_fs(tmp_path / "small", "1m") as fs:
        r = python(
            NO_FALLOCATE + "import numpy as np\nfrom matryoshka_index.backends.faiss_backend import FaissBackend\n"
            "from matryoshka_index.errors import StorageError\n"
            f"b = FaissBackend.create(coarse_dim=8, full_dim=256, spill_dir={str(fs)!r})\n"
            "x = np.random.default_rng(0).standard_normal((4000, 256)).astype(np.float32)\n"
            "x /= np.linalg.norm(x, axis=1, keepdims=True)\n"
            "try:\n    b.add(np.arange(4000), x[:, :8].copy(), x)\nexcept StorageError as e:\n    print('ERR', e)\n"
        )
        assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
        assert r.stdout.startswith("ERR ") and "cannot reserve space" in r.stdout and "is free" in r.stdout
        assert len(r.stdout.strip().splitlines()) == 1


def test_check_free_space_says_how_much_and_where(tmp_path):
    with pytest.raises(StorageError) as info:
        storage.check_free_space(tmp_path / "not" / "yet", 1 << 60, "the index x")
    msg = str(info.value)
    assert "the index x needs about 1024.0 PiB" not in msg  # units stop at TiB
    assert "needs about" in msg and str(tmp_path) in msg and "is free" in msg and "\n" not in msg


def test_write_npy_round_trips_and_refuses_a_wrong_amount_of_data(tmp_path):
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    storage.write_npy(tmp_path / "a.npy", x.shape, x.dtype, [x[:7], x[7:]])
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), x)
    assert storage.npy_bytes(x.shape, x.dtype) == (tmp_path / "a.npy").stat().st_size
    with pytest.raises(ValueError):
        storage.write_npy(tmp_path / "b.npy", (21, 3), x.dtype, [x])
    assert not (tmp_path / "b.npy").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------- 2. temporaries of dead processes
_KILLED_WRITER = """
import os, numpy as np
from matryoshka_index import storage
from matryoshka_index.backends.faiss_backend import FaissBackend
b = FaissBackend.create(coarse_dim=4, full_dim=16)
x = np.ones((10, 16), np.float32)
b.add(np.arange(10), x[:, :4].copy(), x)           # a spill directory in $MINDEX_TMPDIR
storage.temporaries.owned_temp_file(storage.temporaries.Path({out!r}).parent, '.out.npy.')   # a half-written file beside an output
with storage.atomic_directory({idx!r}) as tmp:      # a half-written directory
    (tmp / 'a').write_bytes(b'x' * 1000)
    os._exit(9)
"""


def test_temporaries_of_a_killed_process_are_swept_and_a_live_ones_kept(tmp_path):
    work = Path(os.environ[TMPDIR_ENV])
    r = python(_KILLED_WRITER.format(out=str(tmp_path / "out.npy"), idx=str(tmp_path / "idx")))
    assert r.returncode == 9, r.stderr
    assert any(n.startswith("mindex-spill-") for n in os.listdir(work))
    assert any(n.startswith(".out.npy.") for n in os.listdir(tmp_path))
    assert any(n.startswith(".idx.") for n in os.listdir(tmp_path))
    live = storage.owned_temp_dir("mindex-spill-")  # sweeps the dead one's; this process's must stay
    storage.save_npy(tmp_path / "out.npy", np.zeros(3))  # the next write of that output sweeps its leftovers
    with storage.atomic_directory(tmp_path / "idx") as tmp:
        (tmp / "a").write_bytes(b"y")
    assert leftovers(tmp_path) == []
    assert sorted(os.listdir(work)) == [live.name]
    assert storage.sweep_stale(work) == []  # live: kept
    storage.remove_temp_dir(live)


def test_spill_files_go_to_mindex_tmpdir(tmp_path):
    from matryoshka_index.backends.faiss_backend import FaissBackend

    b = FaissBackend.create(coarse_dim=4, full_dim=16)
    x = np.ones((10, 16), np.float32)
    b.add(np.arange(10), x[:, :4].copy(), x)
    spill = Path(b._full.spill.dir)
    assert spill.parent == Path(os.environ[TMPDIR_ENV])
    assert spill.name.startswith(f"mindex-spill-{os.getpid()}-")  # the owner's pid, for people


def test_owned_temp_dir_is_what_the_edge_backend_needs(tmp_path):
    d = storage.owned_temp_dir("mindex-edge-")
    assert d.name.startswith("mindex-edge-") and d.parent == Path(os.environ[TMPDIR_ENV])
    assert storage.sweep_stale(d.parent) == []  # alive: kept
    storage.release_temp_dir(d)  # as if its owner died
    assert [p for p, _, _ in storage.sweep_stale(d.parent)] == [d]


def test_work_directories_of_older_versions_are_kept_for_a_day(tmp_path):
    work = Path(os.environ[TMPDIR_ENV])
    legacy = work / "mindex-spill-abcd1234"  # no pid in the name: its owner (an older version) holds no lock
    legacy.mkdir()
    assert storage.sweep_stale(work) == []
    old = os.stat(legacy).st_mtime - 2 * 24 * 3600
    os.utime(legacy, (old, old))
    assert [p for p, _, _ in storage.sweep_stale(work)] == [legacy]


# ---------------------------------------------------------------------- 3. a kill between the two renames
_KILL_BETWEEN_RENAMES = """
import os
from matryoshka_index import storage
storage.atomic._exchange = lambda a, b: False           # the fallback of file systems without RENAME_EXCHANGE
storage.atomic._between_renames = lambda: os._exit(9)   # killed with the old version aside, the new one not in
with storage.atomic_directory({idx!r}) as tmp:
    (tmp / 'v').write_text('new')
"""


def _kill_between_renames(idx: Path) -> None:
    r = python(_KILL_BETWEEN_RENAMES.format(idx=str(idx)))
    assert r.returncode == 9, r.stderr
    assert not idx.exists(), "the kill came between the renames: the name is absent"
    assert any(p.name.endswith(".old") for p in idx.parent.iterdir())


def test_a_kill_between_the_renames_is_repaired_on_the_next_open(tmp_path):
    idx = tmp_path / "idx"
    with storage.atomic_directory(idx) as tmp:
        (tmp / "v").write_text("old")
    _kill_between_renames(idx)
    done = storage.recover_directory(idx)  # what opening an index does first
    assert done and "restored" in done[0][2]
    assert (idx / "v").read_text() == "old"
    storage.sweep_stale(tmp_path)
    assert leftovers(tmp_path) == []


def test_a_kill_between_the_renames_is_repaired_by_the_next_save(tmp_path):
    idx = tmp_path / "idx"
    with storage.atomic_directory(idx) as tmp:
        (tmp / "v").write_text("old")
    _kill_between_renames(idx)
    with storage.atomic_directory(idx) as tmp:
        assert (idx / "v").read_text() == "old"  # put back before the new version is written
        (tmp / "v").write_text("newer")
    assert (idx / "v").read_text() == "newer" and leftovers(tmp_path) == []


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 is Linux's")
def test_with_rename_exchange_the_name_is_never_absent(tmp_path):
    idx = tmp_path / "idx"
    with storage.atomic_directory(idx) as tmp:
        (tmp / "v").write_text("old")
    r = python(
        "import os\nfrom matryoshka_index import storage\nstorage.atomic._between_renames = lambda: os._exit(9)\n"
        f"with storage.atomic_directory({str(idx)!r}) as tmp:\n    (tmp / 'v').write_text('new')\n"
    )
    if r.returncode == 9:
        pytest.skip("this file system has no RENAME_EXCHANGE (the two-rename fallback ran)")
    assert r.returncode == 0, r.stderr
    assert (idx / "v").read_text() == "new" and leftovers(tmp_path) == []


def test_ctrl_c_between_the_renames_puts_the_old_version_back(tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    with storage.atomic_directory(idx) as tmp:
        (tmp / "v").write_text("old")

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(storage.atomic, "_exchange", lambda a, b: False)
    monkeypatch.setattr(storage.atomic, "_between_renames", interrupt)
    with pytest.raises(KeyboardInterrupt), storage.atomic_directory(idx) as tmp:
        (tmp / "v").write_text("new")
    assert (idx / "v").read_text() == "old" and leftovers(tmp_path) == []


# ---------------------------------------------------------------------- 5. symlinked outputs
def test_a_symlinked_output_directory_is_followed(tmp_path):
    real = tmp_path / "real"
    with storage.atomic_directory(real) as tmp:
        (tmp / "v").write_text("old")
    link = tmp_path / "link"
    link.symlink_to(real)
    with storage.atomic_directory(link) as tmp:
        (tmp / "v").write_text("new")
    assert link.is_symlink() and (real / "v").read_text() == "new"
    f = tmp_path / "f.txt"
    f.write_text("old")
    (tmp_path / "flink").symlink_to(f)
    storage.atomic_write_bytes(tmp_path / "flink", b"new")
    assert (tmp_path / "flink").is_symlink() and f.read_text() == "new"


def test_a_dangling_symlink_output_is_one_line(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere" / "idx")
    with pytest.raises(StorageError, match="does not exist"), storage.atomic_directory(tmp_path / "link"):
        pass
    with pytest.raises(StorageError, match="does not exist"):
        storage.save_npy(tmp_path / "link", np.zeros(3))


# ---------------------------------------------------------------------- 7. memory maps read through a window
def _mapping_rss_kb(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_checking_a_memory_mapped_corpus_keeps_a_bounded_window_resident(tmp_path):
    n, d = 200_000, 64  # 51 MB; the check reads it in windows of 65,536 rows (16 MB)
    path = tmp_path / "corpus.npy"
    np.save(path, np.ones((n, d), np.float32))
    x = storage.load_vectors(path)
    check_embeddings(x, "corpus")
    rss = _mapping_rss_kb(path)
    assert rss < 20 * 1024, f"{rss} KiB of the 51 MB corpus still resident after one checking pass"
    out = tmp_path / "copy.npy"
    storage.save_npy(out, x)  # a streaming copy drops its windows too
    assert _mapping_rss_kb(path) < 20 * 1024
    np.testing.assert_array_equal(np.load(out, mmap_mode="r")[-5:], x[-5:])


def _vm_flags(path: Path) -> set[str]:
    """The VmFlags of this process's mappings of ``path`` ("rr": advised random, "sr": sequential)."""
    flags: set[str] = set()
    inside = False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("VmFlags:"):
                flags |= set(line.split()[1:])
    return flags


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_the_spill_file_is_advised_random_and_streaming_sequential(tmp_path):
    from matryoshka_index.backends.faiss_backend import FaissBackend

    b = FaissBackend.create(coarse_dim=4, full_dim=16)
    x = np.ones((5000, 16), np.float32)
    b.add(np.arange(5000), x[:, :4].copy(), x)
    assert "rr" in _vm_flags(Path(b._full.spill.path))  # the rerank's gathers: no read-ahead
    storage.save_npy(tmp_path / "a.npy", np.ones((50_000, 16), np.float32))
    m = storage.load_vectors(tmp_path / "a.npy")
    seen = [_vm_flags(tmp_path / "a.npy") for _ in storage.stream_rows(m, 10_000)]
    assert all("sr" in f for f in seen) and "sr" not in _vm_flags(tmp_path / "a.npy")


def test_advice_is_a_no_op_on_plain_arrays_and_works_on_maps(tmp_path):
    assert storage.advise_random(np.zeros((4, 4), np.float32)) is False
    storage.save_npy(tmp_path / "a.npy", np.ones((5000, 8), np.float32))
    m = storage.load_vectors(tmp_path / "a.npy")
    assert storage.advise_random(m) and storage.advise_sequential(m) and storage.release_rows(m, 0, 2500)
    assert float(m[4999, 7]) == 1.0  # released rows read back from the file


# ---------------------------------------------------------------------- 11. huge and tiny values normalise
def test_l2_normalize_is_scale_free_without_overflow_warnings():
    x = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    with np.errstate(all="raise"):
        for scale in (1e30, 1e-30, 1.0):
            np.testing.assert_allclose(l2_normalize(x * np.float32(scale)), l2_normalize(x), atol=1e-6)
    assert not l2_normalize(np.zeros((2, 4))).any()


def test_float64_values_beyond_float32_are_refused_with_one_line():
    x = np.ones((3, 4))
    x[1, 2] = 1e300
    with pytest.raises(Exception, match="row 1 has values beyond float32"):
        check_embeddings(x, "q")


def test_a_faiss_save_that_runs_out_of_space_is_one_line_and_keeps_the_old_index(tmp_path, monkeypatch):
    """The FAISS backend writes full.npy and ids.npy with ordinary writes into reserved space (before: a
    writable memory map, which a full disk turns into SIGBUS)."""
    from matryoshka_index import MatryoshkaIndex

    x = l2_normalize(np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32))
    idx = MatryoshkaIndex.build(x, coarse_dim=4, quiet=True)
    out = tmp_path / "idx"
    idx.save(out)
    before = idx.search(x[:5], k=3)
    idx.add(x[:10] * -1, ids=np.arange(1000, 1010))  # changed since load: full.npy is rewritten, not linked
    real_open_memmap = np.lib.format.open_memmap

    def no_writable_maps(path, mode="r+", *args, **kwargs):
        assert "+" not in mode and "w" not in mode, f"writable memory map of {path}: a full disk would SIGBUS"
        return real_open_memmap(path, mode, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "open_memmap", no_writable_maps)
    idx.save(tmp_path / "other")  # succeeds without a writable map
    monkeypatch.setattr(os, "posix_fallocate", _enospc)
    with pytest.raises(StorageError, match="no space left"):
        idx.save(out)
    monkeypatch.undo()
    again = MatryoshkaIndex.load(out)
    np.testing.assert_array_equal(again.search(x[:5], k=3)[1], before[1])
    assert leftovers(tmp_path) == []
