"""Garbage collection: delete artifacts that no remaining partition of the lake references.

Retention removes old hour partitions; the artifacts only they referenced stay behind. `collect()`
scans every spans and held-back Parquet file with DuckDB for references (every map value of
`attributes`, `resource_attributes`, event and link attributes, and the `artifacts` column's
`ref`), lists the store, and deletes the objects that are not referenced *and* were last written or
refreshed more than `grace_s` ago.

Why a grace period (default 1h): a running worker writes an object the moment it offloads a value,
but the span that references it reaches a Parquet file only later — after the sink's roll interval,
after tail sampling decided, after a Kafka replay. Between the two, the object is referenced by
nothing gc can see. So gc never deletes recent objects. "Recent" is the object's modification
time, which a worker bumps whenever it re-uses an existing object that is older than
KNOWN_TTL_S (10 min) and trusts its in-process cache of known objects for at most KNOWN_TTL_S:
an object a span in flight points to was therefore written or refreshed at most ~20 minutes
before that span was offloaded. The grace period must exceed those 20 minutes plus the longest
time a span can wait in memory before it is written (sink roll_seconds, tail-sampling wait).

Each candidate is stat'ed again right before it is deleted, so an object refreshed while gc ran
is kept. A lake with no spans files at all is refused unless `allow_empty_lake` (a wrong lake path
would otherwise delete the whole store).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from sinks.artifacts.refs import REF_PREFIX
from sinks.artifacts.store import ArtifactStore
from sinks.parquet import object_store
from sinks.parquet.layout import Lake, open_lake, stored_files

log = logging.getLogger("tracelake.artifacts.gc")

DEFAULT_GRACE_S = 3600.0
SCANNED_TABLES = ("spans", "holdback")


class GcRefused(RuntimeError):
    """Deleting would be unsafe (no lake files found): nothing was deleted."""


@dataclass
class GcReport:
    store: str
    dry_run: bool
    lake_files: int = 0
    referenced: int = 0  # distinct references found in the lake
    objects: int = 0  # objects in the store
    kept_referenced: int = 0
    kept_young: int = 0  # unreferenced but within the grace period (or of unknown age)
    deleted: list[str] = field(default_factory=list)  # refs deleted (or that would be, on a dry run)
    deleted_bytes: int = 0

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"{self.store}: {self.objects} objects, {self.kept_referenced} referenced by {self.lake_files} lake files, "
            f"{self.kept_young} unreferenced but within the grace period, {verb} {len(self.deleted)} "
            f"({self.deleted_bytes} bytes)"
        )


def lake_files(lakes: Sequence[str | Path | Lake]) -> list[str]:
    """Every spans and held-back file of the lakes, as DuckDB opens them (paths, `s3://` URLs)."""
    files: list[str] = []
    for lake in map(open_lake, lakes):
        for table in SCANNED_TABLES:
            files.extend(lake.url(str(p)) for p in stored_files(lake, table))
    return files


def referenced_refs(files: Sequence[str], lakes: Sequence[str | Path | Lake] = ()) -> set[str]:
    """Every `artifact:sha256:` value anywhere in these spans files (`s3://` ones read through the first lake on
    object storage among `lakes`)."""
    if not files:
        return set()
    con = duckdb.connect()
    remote = [lake for lake in map(open_lake, lakes) if lake.fs is not None]
    if remote:
        assert remote[0].fs is not None
        object_store.register(con, remote[0].fs)
    try:
        paths = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(f"CREATE TEMP VIEW f AS SELECT * FROM read_parquet([{paths}], union_by_name=true)")
        columns = {row[0] for row in con.execute("DESCRIBE f").fetchall()}
        parts = []
        for name in ("attributes", "resource_attributes"):
            if name in columns:
                parts.append(f"SELECT unnest(map_values({name})) AS v FROM f")
        for name in ("events", "links"):
            if name in columns:
                values = f"flatten(list_transform({name}, lambda x: map_values(x.attributes)))"
                parts.append(f"SELECT unnest({values}) AS v FROM f")
        if "artifacts" in columns:
            parts.append("SELECT unnest(list_transform(artifacts, lambda a: a.ref)) AS v FROM f")
        if not parts:
            return set()
        sql = f"SELECT DISTINCT v FROM ({' UNION ALL '.join(parts)}) WHERE starts_with(v, '{REF_PREFIX}')"
        return {row[0] for row in con.execute(sql).fetchall()}
    finally:
        con.close()


def collect(
    store: ArtifactStore,
    lakes: Sequence[str | Path | Lake],
    grace_s: float = DEFAULT_GRACE_S,
    dry_run: bool = False,
    now: float | None = None,
    allow_empty_lake: bool = False,
) -> GcReport:
    report = GcReport(store=store.uri, dry_run=dry_run)
    files = lake_files(lakes)
    report.lake_files = len(files)
    if not files and not allow_empty_lake:
        raise GcRefused(
            f"no spans Parquet files under {', '.join(str(lake) for lake in lakes)}: refusing to treat every "
            "artifact as unreferenced (wrong lake path?)"
        )
    # the lake is scanned before the store is listed: an object written after the scan is young
    referenced = referenced_refs(files, lakes)
    report.referenced = len(referenced)
    cutoff = (time.time() if now is None else now) - grace_s
    for obj in store.iter_objects():
        report.objects += 1
        if obj.ref in referenced:
            report.kept_referenced += 1
            continue
        if obj.mtime is None or obj.mtime > cutoff:
            report.kept_young += 1
            continue
        if dry_run:
            report.deleted.append(obj.ref)
            report.deleted_bytes += obj.size
            continue
        fresh = store.info(obj.ref)  # refreshed by a worker while we were listing?
        if fresh is None or fresh.mtime is None or fresh.mtime > cutoff:
            report.kept_young += fresh is not None
            continue
        if store.delete(obj.ref):
            report.deleted.append(obj.ref)
            report.deleted_bytes += obj.size
            log.debug("deleted unreferenced artifact %s", obj.path)
    return report
