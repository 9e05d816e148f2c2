"""The manifest is not trusted blindly (issue 15, item 6): every field is checked on load with one line
naming it, and the manifest carries a checksum of its own canonical form, verified like the files'.

Edits are re-sealed (the checksum recomputed) where the test is about a field's check, so that the
field's own check is what answers, not the checksum; without re-sealing, the checksum answers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_corpus

from matryoshka_index import MatryoshkaIndex
from matryoshka_index.errors import FormatError

FIXTURES = Path(__file__).parent / "fixtures" / "index_v1"
KEY = "manifest_sha256"


def canonical_sha256(manifest: dict) -> str:
    """The documented checksum: sha256 of the manifest minus its checksum key, sorted, compact."""
    rest = {k: v for k, v in manifest.items() if k != KEY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "ix.mindex"
    MatryoshkaIndex.build(make_corpus(400, seed=2), coarse_dim=8, adaptor="pca", quiet=True).save(path)
    return path


@pytest.fixture
def saved(built, tmp_path) -> Path:
    path = tmp_path / "ix.mindex"
    shutil.copytree(built, path)
    return path


def read(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def write(path: Path, manifest: dict, *, reseal: bool) -> None:
    if reseal and KEY in manifest:
        manifest[KEY] = canonical_sha256(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def edit(path: Path, change, *, reseal: bool = True) -> None:
    m = read(path)
    change(m)
    write(path, m, reseal=reseal)


def setter(*keys_and_value):
    *keys, value = keys_and_value

    def change(m: dict) -> None:
        target = m
        for key in keys[:-1]:
            target = target[key]
        if value is DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value

    return change


DELETE = object()


def test_a_saved_manifest_carries_the_checksum_of_its_canonical_form(built):
    m = read(built)
    assert m[KEY] == canonical_sha256(m)
    assert m["format_version"] == 1  # the checksum is an added key: readers of version 1 ignore it


# (change, words the one line must contain): each edit is valid JSON and, re-sealed, passes the checksum.
EDITS = [
    (setter("candidates", -5), "'candidates'"),
    (setter("candidates", 0), "'candidates'"),
    (setter("candidates", "40"), "'candidates'"),
    (setter("candidates", True), "'candidates'"),
    (setter("candidates", 1), "'candidates'"),  # in range, but not what the calibration chose
    (setter("candidates", 10**12), "'candidates'"),
    (setter("metric", "l2"), "'metric'"),
    (setter("rerank", "reversed"), "'rerank'"),
    (setter("count", -1), "'count'"),
    (setter("count", 401), "'count'"),  # the backend stores 400
    (setter("count", 4.5), "'count'"),
    (setter("coarse_dim", 0), "'coarse_dim'"),
    (setter("coarse_dim", 64), "'coarse_dim'"),  # larger than full_dim
    (setter("full_dim", 16), "'full_dim'"),
    (setter("input_dim", "32"), "'input_dim'"),
    (setter("adaptor", "pca"), "'adaptor'"),
    (setter("adaptor", "kind", "umap"), "'adaptor.kind'"),
    (setter("adaptor", "kind", "none"), "'adaptor"),
    (setter("adaptor", "directory", "elsewhere"), "'adaptor.directory'"),
    (setter("calibration", [1, 2]), "'calibration'"),
    (setter("calibration", "candidates", 7), "'calibration.candidates'"),
    (setter("calibration", "target_recall", 2.0), "'calibration.target_recall'"),
    (setter("calibration", "recall", -0.1), "'calibration.recall'"),
    (setter("calibration", "reached", "yes"), "'calibration.reached'"),
    (setter("calibration", "reached", False), "'calibration.reached'"),  # its bound reached the target
    (setter("calibration", "k", 0), "'calibration.k'"),
    (setter("calibration", "queries", -3), "'calibration.queries'"),
    (setter("calibration", "steps", "many"), "'calibration.steps'"),
    (setter("calibration", "steps", [[12, None, 1.0, 1.0, 5]]), "'calibration.steps'"),
    (setter("calibration", "knob", {"nprobe": -1}), "'calibration.knob'"),
    (setter("calibration", "seconds", -1), "'calibration.seconds'"),
    (setter("calibration", "candidates", DELETE), "'calibration.candidates'"),
    (setter("backend", "metric", "ip"), "'backend.metric'"),
    (setter("backend", "coarse_dim", 16), "'backend.coarse_dim'"),
    (setter("backend", "count", 399), "'backend.count'"),
    (setter("backend", "kind", 3), "'backend.kind'"),
    (setter("backend", DELETE), "'backend'"),
    (setter("created", "yesterday"), "'created'"),
    (setter("library_version", 5), "'library_version'"),
    (setter("files", "ids.npy", "not-a-digest"), "'files'"),
    (setter("format_version", "1"), "format version '1' is not supported"),
    (setter("origin", "somewhere"), "'origin'"),
]


@pytest.mark.parametrize(("change", "words"), EDITS, ids=[f"{i}-{w.strip(chr(39))}" for i, (_, w) in enumerate(EDITS)])
def test_every_field_is_checked_on_load_with_one_line_naming_it(saved, change, words):
    edit(saved, change)
    with pytest.raises(FormatError) as err:
        MatryoshkaIndex.load(saved)
    message = str(err.value)
    assert words in message, message
    assert "\n" not in message and "manifest.json" in message
    with pytest.raises(FormatError):  # the field checks do not depend on verify
        MatryoshkaIndex.load(saved, verify=False)


def test_an_edit_that_keeps_every_field_coherent_is_caught_by_the_checksum(saved):
    def coherent(m: dict) -> None:  # candidates 12 -> 10 everywhere a check could compare it
        m["candidates"] = 10
        m["calibration"]["candidates"] = 10

    edit(saved, coherent, reseal=False)
    with pytest.raises(FormatError) as err:
        MatryoshkaIndex.load(saved)
    assert "manifest.json" in str(err.value) and "checksum" in str(err.value) and "\n" not in str(err.value)


def test_the_issue_examples_without_a_new_checksum_are_refused(saved):
    """candidates -5 and 1 (issue 15): the field is named (1 is not what the calibration chose)."""
    for value in (-5, 1):
        edit(saved, setter("candidates", value), reseal=False)
        with pytest.raises(FormatError, match="'candidates'"):
            MatryoshkaIndex.load(saved)


def test_no_verify_skips_the_manifest_checksum_like_the_files(saved):
    edit(saved, setter("created", "2020-01-01T00:00:00+00:00"), reseal=False)  # valid, but not sealed
    with pytest.raises(FormatError, match="checksum"):
        MatryoshkaIndex.load(saved)
    assert len(MatryoshkaIndex.load(saved, verify=False)) == 400


def test_a_malformed_checksum_is_one_line(saved):
    edit(saved, setter(KEY, 12), reseal=False)
    with pytest.raises(FormatError, match=f"'{KEY}'"):
        MatryoshkaIndex.load(saved, verify=False)


def test_a_manifest_from_a_future_format_version_is_one_line(saved):
    edit(saved, setter("format_version", 2))
    with pytest.raises(FormatError) as err:
        MatryoshkaIndex.load(saved)
    assert "format version 2 is not supported" in str(err.value) and "upgrade matryoshka-index" in str(err.value)
    assert "\n" not in str(err.value)


def test_an_old_manifest_without_a_checksum_loads_and_is_still_checked(tmp_path):
    assert KEY not in read(FIXTURES / "pca")
    index = MatryoshkaIndex.load(FIXTURES / "pca")
    assert len(index) == 300
    shutil.copytree(FIXTURES / "pca", tmp_path / "pca")
    edit(tmp_path / "pca", setter("candidates", -5))
    with pytest.raises(FormatError, match="'candidates'"):
        MatryoshkaIndex.load(tmp_path / "pca")
    # re-saving an old index seals its manifest
    index.save(tmp_path / "again")
    m = read(tmp_path / "again")
    assert m[KEY] == canonical_sha256(m)


def test_mindex_info_refuses_an_edited_manifest_in_one_line(saved):
    from matryoshka_index.cli import main

    edit(saved, setter("candidates", -5))
    result = CliRunner().invoke(main, ["info", str(saved)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "'candidates'" in result.stderr and "Traceback" not in result.output


def test_the_same_checks_serve_a_manifest_kept_outside_a_directory(built):
    """Qdrant keeps the manifest in collection metadata: no file table, and the count is the app's."""
    from matryoshka_index.manifest import check_manifest

    index = MatryoshkaIndex.load(built)
    m = index._manifest({"kind": "qdrant"})
    assert "files" not in m and m[KEY] == canonical_sha256(m)

    class Collection:  # what check_manifest reads of a backend
        kind, coarse_dim, full_dim, metric = "qdrant", 8, 32, "cosine"

        def __len__(self) -> int:
            return 1234  # the application upserted more points: not an error for a collection

    assert check_manifest(m, where="collection 'c'", stored="qdrant", backend=Collection()) is m
    bad = copy.deepcopy(m)
    bad["candidates"] = -5
    bad[KEY] = canonical_sha256(bad)
    with pytest.raises(FormatError) as err:
        check_manifest(bad, where="collection 'c'", stored="qdrant", backend=Collection())
    assert str(err.value).startswith("collection 'c': ") and "'candidates'" in str(err.value)
    unsealed = {**m, "candidates": 10, "calibration": {**m["calibration"], "candidates": 10}}
    with pytest.raises(FormatError, match="checksum"):
        check_manifest(unsealed, where="collection 'c'", stored="qdrant")
    # a migration's manifest (no checksum, empty calibration, no adaptor directory) passes
    migrated = {k: v for k, v in m.items() if k != KEY}
    migrated.update(calibration={}, adaptor={"kind": "matryoshka-adaptor", "directory": None}, candidates=40)
    migrated["origin"] = {"kind": "qdrant-migration", "mode": "copy", "source": "docs", "vector": None}
    assert check_manifest(migrated, where="collection 'c'", stored="qdrant") is migrated


def test_search_results_of_a_sealed_index_are_unchanged_by_the_checks(built):
    index = MatryoshkaIndex.load(built)
    q = make_corpus(420, seed=2)[400:]
    again = MatryoshkaIndex.load(built, verify=False)
    np.testing.assert_array_equal(index.search(q, k=5)[1], again.search(q, k=5)[1])


def test_the_manifest_knows_the_backends_the_package_has():
    from matryoshka_index.backends import BACKENDS
    from matryoshka_index.manifest import BACKEND_KINDS

    assert BACKEND_KINDS == BACKENDS
