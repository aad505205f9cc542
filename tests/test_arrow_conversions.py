"""Python values handed to Arrow must not search the import path each time (python-dateutil is a dependency).

pyarrow's conversion of untyped Python values (`pa.array([...])`, a `str` scalar passed to a compute function)
tries `import dateutil`; a failed import is not cached, so without the package every such call walks sys.path
(~120 µs), dozens of times per batch in the receiver and the worker."""

from __future__ import annotations

import importlib._bootstrap as bootstrap
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pytest


@pytest.fixture
def imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    seen: list[str] = []
    find_and_load = bootstrap._find_and_load  # type: ignore[attr-defined]

    def counting(name: str, import_: object) -> object:
        seen.append(name)
        return find_and_load(name, import_)

    column = pa.array(["a", "", None])
    pc.equal(column, "")  # the first conversion may import for real
    monkeypatch.setattr(bootstrap, "_find_and_load", counting)
    yield seen


def test_untyped_conversions_import_nothing(imports: list[str]) -> None:
    column = pa.array(["a", "", None])
    for _ in range(3):
        pc.equal(column, "")
        pa.array([1, 2, 3])
        pa.array(["x", None])
    assert imports == []
