"""Right to delete: remove one user's traces from every table, and the artifacts only they referenced.

What goes: every trace in which any span or trace summary carries the user's id in `user_id` — the
whole trace, not only the spans that carry the id, because child spans (retrievals, LLM calls) hold
the user's prompts without repeating `user.id`. Its spans, held-back spans, summary rows and
feedback go, in every partition. The ids matched are the raw id and its HMAC token as redact_pii
computes it (`user.id` is hashed by default; `hash_key.lookup_tokens` also gives the forms lakes written by
older versions hold), so the command takes what the user knows: their id.

How: each Parquet file holding such a trace is rewritten without its rows (pyarrow, so every column
keeps its exact type) to a temp name, fsynced and renamed over the original; a file left empty is
removed. A reader sees the old file or the new one, never half. On object storage the object is uploaded again
under its own key (a PUT replaces an object whole; names stay, so compaction's records stay true); a query that
had opened the old object at that moment fails and is run again. Then the artifacts referenced by the
removed rows and by nothing left in the lake are deleted from the store. Runs under the maintenance
lock, so it never races compaction or retention. The trace-id index of each day whose `traces` / `feedback`
files were rewritten is updated from them (sinks/parquet/trace_index.py), so the forgotten ids leave it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.maintenance import maintenance_lock
from sinks.artifacts.gc import lake_files, referenced_refs
from sinks.artifacts.refs import is_ref
from sinks.artifacts.store import ArtifactStore
from sinks.parquet import layout, object_store, trace_index

TABLES = ("spans", "holdback", "traces", "feedback")  # holdback: dropped traces wait there for late feedback


@dataclass
class ForgetReport:
    trace_ids: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows removed
    files_rewritten: int = 0
    files_removed: int = 0
    artifacts_deleted: list[str] = field(default_factory=list)
    dry_run: bool = False

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{verb} {len(self.trace_ids)} traces of the user"]
        out += [f"  {table}: {n} rows" for table, n in self.rows.items()]
        if not self.dry_run:
            out.append(f"  files: {self.files_rewritten} rewritten, {self.files_removed} removed")
        if self.dry_run:
            out.append(
                f"  artifacts those rows reference: {len(self.artifacts_deleted)} (deleted if nothing else does)"
            )
        else:
            out.append(f"  artifacts deleted: {len(self.artifacts_deleted)}")
        return out


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def user_trace_ids(lake: layout.Lake, user_ids: Sequence[str]) -> list[str]:
    """Trace ids whose spans (kept or held back) or summaries carry one of `user_ids`."""
    con = duckdb.connect()
    if lake.fs is not None:
        object_store.register(con, lake.fs)
    found: set[str] = set()
    for table in ("spans", "holdback", "traces"):
        files = [lake.url(str(p)) for p in layout.stored_files(lake, table)]
        if not files:
            continue
        sql = (
            f"SELECT DISTINCT trace_id FROM read_parquet([{_sql_list(files)}], union_by_name=true, "
            f"hive_partitioning=false) WHERE user_id IN ({_sql_list(user_ids)})"
        )
        found.update(row[0] for row in con.execute(sql).fetchall())
    return sorted(found)


def _artifact_refs(rows: pa.Table) -> set[str]:
    refs: set[str] = set()
    if "artifacts" in rows.column_names:
        for items in rows.column("artifacts").to_pylist():
            refs.update(a["ref"] for a in items or [] if a.get("ref"))
    for name in ("attributes", "resource_attributes"):
        if name in rows.column_names:
            for pairs in rows.column(name).to_pylist():
                refs.update(v for _k, v in pairs or [] if is_ref(v))
    return refs


def _rewrite(lake: layout.Lake, path: Path, keep: pa.Table) -> bool:
    """Replace `path` with `keep`; an empty result removes the file. Returns whether it was removed.
    On object storage the object is uploaded again under its key (a PUT replaces it whole)."""
    if keep.num_rows == 0:
        if lake.fs is not None:
            lake.fs.delete_file(str(path))
        else:
            path.unlink()
            layout.fsync_dir(path.parent)
        return True
    layout.put_table(lake, path, keep, compression="zstd")
    return False


def _day_of(path: Path) -> date:
    """The day of a lake file's `dt=…` directory."""
    start = layout.parse_hour(path.parent.parent.name, path.parent.name)
    assert start is not None, path
    return start.date()


def forget_user(
    lake: str | Path | layout.Lake,
    user_ids: Sequence[str],
    stores: Sequence[ArtifactStore] = (),
    dry_run: bool = False,
    lock_wait_s: float = 30.0,
) -> ForgetReport:
    """Remove every trace of the user from the lake (see the module docstring)."""
    lake = layout.open_lake(lake)
    report = ForgetReport(dry_run=dry_run)
    if (not lake.remote and not Path(lake.root).is_dir()) or not user_ids:
        return report
    with maintenance_lock(lake, lock_wait_s):
        traces = user_trace_ids(lake, user_ids)
        report.trace_ids = traces
        if not traces:
            return report
        doomed = pa.array(traces, pa.string())
        candidates: set[str] = set()
        rewritten: dict[date, list[Path]] = {}  # traces / feedback files, by day: their trace-id index is updated
        for table in TABLES:
            removed_rows = 0
            for path in layout.stored_files(lake, table):
                rows = pq.read_table(str(path), filesystem=lake.fs)
                mine = pc.is_in(rows.column("trace_id"), value_set=doomed)
                hits = pc.sum(mine).as_py() or 0
                if not hits:
                    continue
                removed_rows += hits
                candidates |= _artifact_refs(rows.filter(mine))
                if dry_run:
                    continue
                if _rewrite(lake, path, rows.filter(pc.invert(mine))):
                    report.files_removed += 1
                else:
                    report.files_rewritten += 1
                if table in trace_index.INDEXED_TABLES:
                    rewritten.setdefault(_day_of(path), []).append(path)
            report.rows[table] = removed_rows
        indexed = trace_index.index_objects(lake) if rewritten else {}
        for day in sorted(rewritten.keys() & indexed.keys()):
            trace_index.update_day(lake, day, indexed[day], changed=[str(p) for p in rewritten[day]])
        if candidates and stores:
            still = referenced_refs(lake_files([lake]), [lake]) if not dry_run else set()
            for ref in sorted(candidates - still):
                if dry_run:
                    report.artifacts_deleted.append(ref)
                    continue
                for store in stores:
                    if store.delete(ref):
                        report.artifacts_deleted.append(ref)
    return report
