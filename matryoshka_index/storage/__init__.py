"""Files on disk, one module per job; the public names of each are importable from here as well
(``from matryoshka_index.storage import X``, which the rest of the package uses).

* :mod:`.disk`: output locations (a symlink followed), one-line disk errors, free space, space reserved
  before a write, flushing to disk, the bytes a tree occupies;
* :mod:`.temporaries`: owned temporaries (locked by their process while it lives) and their sweeping;
* :mod:`.atomic`: atomic writes of a file or a directory (a crash leaves the old one or the new one);
* :mod:`.vectors`: ``.npy`` / ``.fvecs`` reading and writing, with ordinary I/O after the space is reserved;
* :mod:`.checksums`: sha256 of a file; versioned JSON read back with its format and version checked;
* :mod:`.mmaps`: memory-map advice (sequential / random reads, rows released behind a streaming pass).
"""

from __future__ import annotations

from .atomic import atomic_directory, atomic_write_bytes, atomic_write_json
from .checksums import read_versioned_json, sha256_file
from .disk import (
    TMPDIR_ENV,
    allocated_bytes,
    check_free_space,
    check_writable,
    disk_error,
    fsync_tree,
    human_bytes,
    preallocate,
    resolve_output,
)
from .mmaps import advise_normal, advise_random, advise_sequential, release_rows, stream_rows
from .temporaries import (
    glob_escape,
    owned_temp_dir,
    recover_directory,
    release_temp_dir,
    remove_temp_dir,
    sweep_stale,
    temp_root,
)
from .vectors import load_vectors, npy_bytes, read_fvecs, save_npy, write_all, write_fvecs, write_npy

__all__ = [
    "TMPDIR_ENV",
    "advise_normal",
    "advise_random",
    "advise_sequential",
    "allocated_bytes",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_free_space",
    "check_writable",
    "disk_error",
    "fsync_tree",
    "glob_escape",
    "human_bytes",
    "load_vectors",
    "npy_bytes",
    "owned_temp_dir",
    "preallocate",
    "read_fvecs",
    "read_versioned_json",
    "recover_directory",
    "release_rows",
    "release_temp_dir",
    "remove_temp_dir",
    "resolve_output",
    "save_npy",
    "sha256_file",
    "stream_rows",
    "sweep_stale",
    "temp_root",
    "write_all",
    "write_fvecs",
    "write_npy",
]
