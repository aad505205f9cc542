"""ArtifactStore: content addressing, layout, write-once, atomicity, and the pyarrow.fs path."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from sinks.artifacts.refs import digest_of, is_ref, make_ref
from sinks.artifacts.store import ArtifactCorruptError, ArtifactNotFoundError, ArtifactStore

TEXT = ("Système : réponds brièvement. ✓ " * 300).encode()


def test_put_get_roundtrip_and_layout(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    ref = store.put(TEXT)
    digest = hashlib.sha256(TEXT).hexdigest()
    assert ref == make_ref(digest) == f"artifact:sha256:{digest}" and is_ref(ref)
    path = tmp_path / "sha256" / digest[:2] / digest[2:4] / f"{digest}.zst"
    assert store.location(ref) == str(path) and path.is_file()
    raw = path.read_bytes()
    assert raw[:4] == bytes.fromhex("28b52ffd")  # a standard zstd frame: `zstd -dc` reads it
    assert len(raw) < len(TEXT) / 5
    assert store.get(ref) == TEXT and store.get(digest) == TEXT
    assert store.exists(ref) and list(store.iter_refs()) == [ref]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_write_once(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    ref = store.put(TEXT)
    path = Path(store.location(ref))
    before = path.stat()
    assert store.put(TEXT) == ref
    assert store.write(digest_of(ref), TEXT) == ("exists", 0)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_old_objects_are_refreshed_not_rewritten(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path), refresh_after_s=60)
    ref = store.put(TEXT)
    path = Path(store.location(ref))
    os.utime(path, (1_000, 1_000))
    ino = path.stat().st_ino
    assert store.write(digest_of(ref), TEXT) == ("refreshed", 0)
    assert path.stat().st_mtime > 1_000 and path.stat().st_ino == ino


def test_file_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ref = ArtifactStore("file://./lake/_artifacts").put(b"x" * 10)
    assert ArtifactStore(str(tmp_path / "lake" / "_artifacts")).get(ref) == b"x" * 10
    assert ArtifactStore(f"file://{tmp_path}/lake/_artifacts").get(ref) == b"x" * 10


def test_missing_corrupt_and_invalid(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    with pytest.raises(ArtifactNotFoundError):
        store.get(make_ref("0" * 64))
    with pytest.raises(ValueError, match="not an artifact reference"):
        store.get("artifact:sha256:XYZ")
    ref = store.put(TEXT)
    other = ArtifactStore(str(tmp_path / "other"))
    Path(store.location(ref)).write_bytes(Path(other.location(other.put(b"something else"))).read_bytes())
    with pytest.raises(ArtifactCorruptError, match="does not match"):
        store.get(ref)
    Path(store.location(ref)).write_bytes(b"not zstd")
    with pytest.raises(ArtifactCorruptError):
        store.get(ref)
    assert store.delete(ref) and not store.delete(ref) and not store.exists(ref)


def test_unwritable_store_raises_oserror_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    store = ArtifactStore(str(tmp_path / "blocker" / "store"))
    with pytest.raises(OSError):
        store.put(TEXT)
    full = ArtifactStore(str(tmp_path / "s"))
    digest = hashlib.sha256(TEXT).hexdigest()
    shard = tmp_path / "s" / "sha256" / digest[:2] / digest[2:4]
    shard.mkdir(parents=True)
    (shard / f"{digest}.zst").mkdir()  # the rename target cannot be replaced: the write fails late
    with pytest.raises(OSError):
        full._backend.write(full.relpath(digest), b"data")
    assert [p.name for p in shard.iterdir()] == [f"{digest}.zst"]  # the temp file was removed


def test_iter_objects_skips_strangers(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    refs = sorted(store.put(f"value {i}".encode()) for i in range(5))
    (tmp_path / "sha256" / "zz").mkdir()
    (tmp_path / "sha256" / "README").write_text("")
    d = digest_of(refs[0])
    (tmp_path / "sha256" / d[:2] / d[2:4] / f".{d}.zst.1.2.tmp").write_bytes(b"")
    (tmp_path / "sha256" / d[:2] / d[2:4] / f"{'f' * 64}.zst").write_bytes(b"")  # wrong shard
    infos = list(store.iter_objects())
    assert sorted(i.ref for i in infos) == refs
    assert all(i.size > 0 and i.mtime for i in infos)


@pytest.mark.parametrize("kind", ["mock", "local"])
def test_pyarrow_filesystem_backend(tmp_path: Path, kind: str) -> None:
    """The path every non-file URI takes (s3://, gs://): exercised offline with mock:// and LocalFileSystem."""
    if kind == "mock":
        store = ArtifactStore("mock:///bucket/prefix")
    else:
        store = ArtifactStore(str(tmp_path / "fs"), filesystem=pafs.LocalFileSystem(), refresh_after_s=60)
    ref = store.put(TEXT)
    assert store.put(TEXT) == ref and store.get(ref) == TEXT and store.exists(ref)
    assert store.location(ref).endswith(f"sha256/{digest_of(ref)[:2]}/{digest_of(ref)[2:4]}/{digest_of(ref)}.zst")
    ref2 = store.put(b"second")
    many = [f"many {i}".encode() for i in range(5)]
    results = store.write_many([(hashlib.sha256(m).hexdigest(), m) for m in many] + [(digest_of(ref2), b"second")])
    assert [r[0] for r in results] == ["created"] * 5 + ["exists"]  # type: ignore[index]
    assert store.get(make_ref(hashlib.sha256(many[3]).hexdigest())) == many[3]
    for m in many:
        store.delete(make_ref(hashlib.sha256(m).hexdigest()))
    assert sorted(store.iter_refs()) == sorted([ref, ref2])
    with pytest.raises(ArtifactNotFoundError):
        store.get(make_ref("1" * 64))
    if kind == "local":  # no temp objects left behind; an old object is refreshed by re-uploading it
        assert not [p for p in (tmp_path / "fs").rglob("*") if p.name.endswith(".tmp")]
        path = Path(store.location(ref))
        assert path.read_bytes()[:4] == bytes.fromhex("28b52ffd")  # compressed once, same format
        assert ArtifactStore(str(tmp_path / "fs")).get(ref) == TEXT
        os.utime(path, (1_000, 1_000))
        status, uploaded = store.write(digest_of(ref), TEXT)
        assert status == "refreshed" and uploaded > 0 and path.stat().st_mtime > 1_000
    assert store.delete(ref) and not store.exists(ref)
    assert list(store.iter_refs()) == [ref2]


def test_pyarrow_errors_are_oserrors() -> None:
    # the processor catches OSError and pa.ArrowException; pyarrow's IO errors are OSErrors
    assert issubclass(pa.ArrowIOError, OSError)


def test_write_many_reports_each_outcome(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path), max_workers=4)
    values = [f"value {i}".encode() for i in range(20)]
    digests = [hashlib.sha256(v).hexdigest() for v in values]
    bad = next(i for i, d in enumerate(digests) if d[:2] not in {x[:2] for x in digests[:i] + digests[i + 1 :]})
    (tmp_path / "sha256").mkdir()
    (tmp_path / "sha256" / digests[bad][:2]).write_text("")
    results = store.write_many(list(zip(digests, values, strict=True)))
    store.close()
    assert isinstance(results[bad], OSError)
    assert all(r[0] == "created" for i, r in enumerate(results) if i != bad)  # type: ignore[index]
    assert sorted(store.iter_refs()) == sorted(make_ref(d) for i, d in enumerate(digests) if i != bad)
