"""gc: referenced objects stay (wherever the reference sits), old unreferenced ones go, young ones wait."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.testing import attributes as attrs
from pipeline.testing import rows as plain
from pipeline.testing import spans_batch
from processors.offload_artifacts import ArtifactOffloader, OffloadArtifactsConfig
from sinks.artifacts.gc import GcRefused, collect, referenced_refs
from sinks.artifacts.store import ArtifactStore
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink

OLD = time.time() - 7200


def _lake(tmp_path: Path) -> tuple[Path, ArtifactStore, dict[str, str]]:
    """A lake whose spans reference objects from attributes, events and the artifacts column only."""
    lake = tmp_path / "lake"
    store = ArtifactStore(str(lake / "_artifacts"))
    p = ArtifactOffloader(OffloadArtifactsConfig(min_bytes=100), store=store)
    batch = spans_batch(
        [
            {"trace_id": "a" * 32, "span_id": "1" * 16, "attrs": {"in_attrs": "A" * 200}},
            {"trace_id": "a" * 32, "span_id": "2" * 16, "events": [("e", {"in_event": "B" * 200})]},
            {"trace_id": "b" * 32, "span_id": "3" * 16, "attrs": {"only_listed": "C" * 200}},
        ]
    )
    out = p.process(batch)
    rows = plain(out, ["attributes", "events", "artifacts"])
    refs = {
        "attrs": attrs(rows[0])["in_attrs"],
        "event": dict(rows[1]["events"][0]["attributes"])["in_event"],
        "listed": rows[2]["artifacts"][0]["ref"],
    }
    # the third span's attribute was edited after offloading: only the artifacts column still names it
    i = out.column_names.index("attributes")
    out = out.set_column(
        i,
        "attributes",
        pa.concat_arrays(
            [out.column(i).combine_chunks().slice(0, 2), pa.array([[("only_listed", "edited")]], out.schema[i].type)]
        ),
    )
    held = p.process(spans_batch([{"trace_id": "c" * 32, "span_id": "4" * 16, "attrs": {"held": "D" * 200}}]))
    refs["holdback"] = attrs(plain(held, ["attributes"])[0])["held"]
    sink = ParquetSink(ParquetSinkConfig(path=str(lake)))
    sink.write("spans", out)
    sink.write("holdback", held)
    sink.flush_all()
    refs["unreferenced_old"] = store.put(b"E" * 200)
    refs["unreferenced_young"] = store.put(b"F" * 200)
    for name, ref in refs.items():
        if name != "unreferenced_young":
            os.utime(store.location(ref), (OLD, OLD))
    return lake, store, refs


def test_referenced_refs_found_everywhere(tmp_path: Path) -> None:
    lake, _, refs = _lake(tmp_path)
    files = [str(p) for p in lake.glob("*/*/*/*.parquet")]
    found = referenced_refs(files)
    assert found == {refs["attrs"], refs["event"], refs["listed"], refs["holdback"]}


def test_gc_keeps_referenced_and_young_deletes_old_unreferenced(tmp_path: Path) -> None:
    lake, store, refs = _lake(tmp_path)
    dry = collect(store, [lake], dry_run=True)
    assert dry.deleted == [refs["unreferenced_old"]] and store.exists(refs["unreferenced_old"])
    assert (dry.objects, dry.kept_referenced, dry.kept_young, dry.lake_files) == (6, 4, 1, 2)

    report = collect(store, [lake])
    assert report.deleted == [refs["unreferenced_old"]] and report.deleted_bytes > 0
    assert set(store.iter_refs()) == set(refs.values()) - {refs["unreferenced_old"]}
    for name in ("attrs", "event", "listed", "holdback"):
        assert store.get(refs[name])

    # once the partitions are gone (retention), their objects go too — young ones still wait
    for f in lake.glob("*/*/*/*.parquet"):
        f.unlink()
    with pytest.raises(GcRefused):
        collect(store, [lake])
    collect(store, [lake], allow_empty_lake=True)
    assert list(store.iter_refs()) == [refs["unreferenced_young"]]
    collect(store, [lake], allow_empty_lake=True, grace_s=0)
    assert list(store.iter_refs()) == []


def test_gc_keeps_an_object_refreshed_during_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake, store, refs = _lake(tmp_path)
    target = refs["unreferenced_old"]
    original = store.info

    def refreshed_meanwhile(ref: str):  # a worker re-used the object between listing and deleting
        os.utime(store.location(ref))
        return original(ref)

    monkeypatch.setattr(store, "info", refreshed_meanwhile)
    report = collect(store, [lake])
    assert report.deleted == [] and store.exists(target)
