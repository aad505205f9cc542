"""ParquetSink: partitions, rolling, whole files with deterministic names, and failures that lose nothing."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import schema
from core.conventions import normalize
from core.sink import SinkWriteError
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.query import connect
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink
from tests.conftest import make_request

HOUR = 3600 * 10**9
T0 = 1_763_800_000 * 10**9  # 2025-11-22T08:26:40Z


def _spans(n: int, start: int = T0, trace_prefix: str = "a") -> pa.Table:
    spans = [
        {"trace_id": f"{trace_prefix}{i:031x}", "span_id": f"{i + 1:016x}", "start": start, "end": start + 10**6}
        for i in range(n)
    ]
    return normalize(decode([SourcedRequest(make_request(spans), "test@1")]))


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_partitions_by_utc_hour_and_table(tmp_path: Path) -> None:
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    sink.write("spans", pa.concat_tables([_spans(3), _spans(2, T0 + HOUR, "b")]))
    assert _files(tmp_path) == []  # nothing on disk before a roll
    written = sink.flush_all()
    assert sorted(Path(w.path).parent.relative_to(tmp_path).as_posix() for w in written) == [
        "spans/dt=2025-11-22/hour=08",
        "spans/dt=2025-11-22/hour=09",
    ]
    assert [w.rows for w in sorted(written, key=lambda w: w.path)] == [3, 2]
    table = pq.read_table(written[0].path)
    assert table.schema.equals(schema.SPANS, check_metadata=False)
    assert pq.ParquetFile(written[0].path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_rolls_on_rows_and_on_age(tmp_path: Path) -> None:
    clock = _Clock()
    config = ParquetSinkConfig(path=str(tmp_path), roll_rows=5, roll_seconds=10, flush_idle=100)
    sink = ParquetSink(config, clock=clock)
    sink.write("spans", _spans(3))
    assert sink.flush_due() == []
    sink.write("spans", _spans(3, trace_prefix="b"))
    assert [w.rows for w in sink.flush_due()] == [6]
    sink.write("spans", _spans(1, trace_prefix="c"))
    clock.now += 9
    assert sink.flush_due() == []
    clock.now += 1
    assert [w.rows for w in sink.flush_due()] == [1]
    assert sink.buffered_rows == 0


def test_an_idle_buffer_is_written_and_a_busy_one_by_age(tmp_path: Path) -> None:
    """Freshness: a partition that got nothing new for flush_idle is written; one that keeps getting
    rows is written when its oldest row is roll_seconds old, not later."""
    clock = _Clock()
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path), roll_seconds=3, flush_idle=1), clock=clock)
    sink.write("spans", _spans(2))
    clock.now += 0.9
    assert sink.flush_due() == []
    clock.now += 0.1
    assert [w.rows for w in sink.flush_due()] == [2]
    for i in range(6):  # a row every 0.5 s: never idle for 1 s
        sink.write("spans", _spans(1, trace_prefix="bcdef0"[i]))
        assert sink.flush_due() == [], i
        clock.now += 0.5
    assert [w.rows for w in sink.flush_due()] == [6]  # 3 s after the first of them


def test_same_rows_same_file_name(tmp_path: Path) -> None:
    a = ParquetSink(ParquetSinkConfig(path=str(tmp_path / "a")))
    b = ParquetSink(ParquetSinkConfig(path=str(tmp_path / "b")))
    rows = _spans(10)
    a.write("spans", rows)
    # the same rows arriving in another order and in two writes still give the same file
    b.write("spans", rows.slice(5))
    b.write("spans", rows.slice(0, 5))
    (fa,) = a.flush_all()
    (fb,) = b.flush_all()
    assert Path(fa.path).name == Path(fb.path).name
    c = ParquetSink(ParquetSinkConfig(path=str(tmp_path / "c")))
    c.write("spans", _spans(10, trace_prefix="d"))
    (fc,) = c.flush_all()
    assert Path(fc.path).name != Path(fa.path).name


def test_unwritable_lake_keeps_rows_and_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "lake"
    blocker.write_text("a file where the lake directory should be")
    clock = _Clock()
    sink = ParquetSink(ParquetSinkConfig(path=str(blocker), roll_rows=1), clock=clock)
    sink.write("spans", _spans(4))
    assert sink.flush_due() == []  # the write failed
    assert sink.failing and sink.buffered_rows == 4 and sink.backlog_bytes > 0
    assert f"cannot write 4 spans rows to {blocker}/spans/dt=2025-11-22/hour=08" in caplog.text
    with pytest.raises(SinkWriteError, match="cannot write 4 spans rows"):
        sink.flush_all()
    blocker.unlink()  # the operator fixes the disk
    clock.now += 60
    (w,) = sink.flush_due()
    assert w.rows == 4 and not sink.failing
    assert connect(blocker).execute("select count(*) from spans").fetchone() == (4,)


def test_disk_full_midwrite_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC cannot be produced portably without a tiny filesystem, so the write call is made to fail."""
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    sink.write("spans", _spans(3))
    real = pq.write_table

    def full(table: pa.Table, where: object, **kw: object) -> None:
        real(table.slice(0, 1), where, **kw)  # some bytes reach the temp file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(SinkWriteError, match="No space left on device"):
        sink.flush_all()
    assert list(tmp_path.rglob("*")) != [] and _files(tmp_path) == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # the temp file was removed
    monkeypatch.setattr(pq, "write_table", real)
    (w,) = sink.flush_all()
    assert w.rows == 3


def test_real_full_filesystem(tmp_path: Path) -> None:
    """A 1 MiB tmpfs really fills up; needs root (as on CI machines), else the mocked test above covers it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here; test_disk_full_midwrite_leaves_no_partial_file covers ENOSPC")
    try:
        sink = ParquetSink(ParquetSinkConfig(path=str(mnt), compression_level=1))
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (1024 * 1024 - 8192))
        rows = _spans(1)
        rows = rows.set_column(
            rows.schema.get_field_index("status_message"),
            "status_message",
            pa.array([os.urandom(40_000).hex()], pa.string()),  # incompressible,
        )
        sink.write("spans", rows)
        with pytest.raises(SinkWriteError, match="No space left on device"):
            sink.flush_all()
        assert sink.buffered_rows == 1
        filler.unlink()
        (w,) = sink.flush_all()
        assert w.rows == 1
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_temp_files_of_a_killed_writer_are_swept_at_start(tmp_path: Path) -> None:
    import os
    import subprocess

    from sinks.parquet.layout import HOST as _HOST

    part = tmp_path / "spans" / "dt=2026-01-01" / "hour=00"
    part.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = part / f".a.parquet.{_HOST}.{dead.pid}.tmp"
    live = part / f".b.parquet.{_HOST}.{os.getpid()}.tmp"
    other_host_fresh = part / ".c.parquet.elsewhere.1.tmp"
    other_host_old = part / ".d.parquet.elsewhere.1.tmp"
    for f in (killed, live, other_host_fresh, other_host_old):
        f.write_bytes(b"half a file")
    os.utime(other_host_old, (0, 0))
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    assert sink.stale_temp_removed == 2
    assert sorted(p.name for p in part.iterdir()) == sorted([live.name, other_host_fresh.name])
