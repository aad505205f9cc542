"""DuckDB artifact(ref): references resolve, everything else passes through, missing objects are NULL."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from sinks.artifacts.refs import make_ref
from sinks.artifacts.sql import register_artifact_function
from sinks.artifacts.store import ArtifactStore

TEXT = "Système : « réponds » ✓\n" * 400


def test_artifact_function(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    ref = store.put(TEXT.encode())
    missing = make_ref("0" * 64)
    con = duckdb.connect()
    register_artifact_function(con, store)
    con.execute("CREATE TABLE t(i INT, v VARCHAR)")
    con.executemany(
        "INSERT INTO t VALUES (?, ?)",
        [(1, ref), (2, "short value"), (3, None), (4, missing), (5, "artifact:sha256:not-hex"), (6, ref)],
    )
    rows = con.execute("SELECT i, artifact(v) FROM t ORDER BY i").fetchall()
    assert rows == [(1, TEXT), (2, "short value"), (3, None), (4, None), (5, "artifact:sha256:not-hex"), (6, TEXT)]
    assert con.execute("SELECT count(*) FROM t WHERE starts_with(v, 'artifact:') AND artifact(v) IS NULL").fetchall()[
        0
    ] == (1,)


def test_several_stores_and_corruption(tmp_path: Path) -> None:
    first, second = ArtifactStore(str(tmp_path / "1")), ArtifactStore(str(tmp_path / "2"))
    ref = second.put(b"only in the second store")
    con = duckdb.connect()
    register_artifact_function(con, [first, str(tmp_path / "2")])
    assert con.execute(f"SELECT artifact('{ref}')").fetchall()[0] == ("only in the second store",)
    bad = first.put(b"original")
    Path(first.location(bad)).write_bytes(b"garbage")
    with pytest.raises(duckdb.Error, match="not a zstd frame"):
        con.execute(f"SELECT artifact('{bad}')").fetchall()
