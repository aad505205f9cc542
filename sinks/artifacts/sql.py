"""DuckDB `artifact(ref)`: resolve references in SQL.

    SELECT artifact(attributes['gen_ai.input.messages']) FROM spans WHERE trace_id = '…'

- a reference whose object exists → the original text;
- a reference whose object is missing (deleted by gc, or written to another store) → NULL, so
  `WHERE artifact(x) IS NULL AND x LIKE 'artifact:%'` finds dangling references;
- anything that is not a reference (short values, numbers, NULL) → returned unchanged, so the
  function can wrap any attribute without a CASE;
- a store that cannot be read (permissions, network) or a damaged object → the query fails:
  "missing" and "unreachable" must not look alike.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from duckdb.func import FunctionNullHandling, PythonUDFType

from sinks.artifacts.refs import REF_PATTERN
from sinks.artifacts.store import ArtifactNotFoundError, ArtifactStore

# resolved texts kept across DuckDB's vectors (2048 rows each): a repeated system prompt is read once
CACHE_BYTES = 64 * 2**20


class _Resolver:
    def __init__(self, stores: Sequence[ArtifactStore | str]) -> None:
        self._specs = list(stores)
        self._stores: list[ArtifactStore] | None = None
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._cached_bytes = 0

    @property
    def stores(self) -> list[ArtifactStore]:
        # opened on first use: a query that never calls artifact() never touches the store
        if self._stores is None:
            self._stores = [s if isinstance(s, ArtifactStore) else ArtifactStore(s) for s in self._specs]
        return self._stores

    def fetch(self, ref: str) -> str | None:
        if ref in self._cache:
            self._cache.move_to_end(ref)
            return self._cache[ref]
        text = None
        for store in self.stores:
            try:
                text = store.get(ref).decode("utf-8", errors="replace")
                break
            except ArtifactNotFoundError:
                continue
        self._cache[ref] = text
        self._cached_bytes += len(text or "")
        while self._cached_bytes > CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= len(old or "")
        return text

    def __call__(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if not pa.types.is_string(arr.type):
            arr = arr.cast(pa.string())
        is_ref = pc.fill_null(pc.match_substring_regex(arr, REF_PATTERN), False)
        if not pc.any(is_ref).as_py():
            return arr
        refs = arr.filter(is_ref)
        distinct = pc.unique(refs)
        texts = pa.array([self.fetch(r) for r in distinct.to_pylist()], pa.string())
        return pc.replace_with_mask(arr, is_ref, texts.take(pc.index_in(refs, distinct)))


def register_artifact_function(
    con: duckdb.DuckDBPyConnection,
    store: ArtifactStore | str | Sequence[ArtifactStore | str],
    name: str = "artifact",
) -> None:
    """Register `artifact(VARCHAR) -> VARCHAR` on `con`; several stores are tried in order."""
    stores: Sequence[ArtifactStore | str] = [store] if isinstance(store, ArtifactStore | str) else store
    con.create_function(
        name,
        _Resolver(stores),
        ["VARCHAR"],
        "VARCHAR",
        type=PythonUDFType.ARROW,
        null_handling=FunctionNullHandling.SPECIAL,
        side_effects=False,
    )
