"""Component types by name, found through Python entry points, as the Collector's factories are.

Built-ins register exactly like third-party packages do: `tracelake.processors` and `tracelake.sinks`
entry-point groups in pyproject.toml, each entry naming a factory object.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Generic, Protocol, TypeVar


class Factory(Protocol):
    @property
    def type(self) -> str:
        """The component type name (read-only, so frozen dataclass factories conform)."""
        ...


F = TypeVar("F", bound=Factory)


class FactoryRegistry(Generic[F]):
    """Factories of one entry-point group, loaded on first use."""

    def __init__(self, group: str, kind: type[F]) -> None:
        self.group = group
        self.kind = kind
        self._loaded: dict[str, F] | None = None

    def factories(self) -> dict[str, F]:
        if self._loaded is None:
            found: dict[str, F] = {}
            for ep in entry_points(group=self.group):
                factory = ep.load()
                if not isinstance(factory, self.kind):
                    raise TypeError(f"entry point {ep.name} = {ep.value} is not a {self.kind.__name__}")
                found[ep.name] = factory
            self._loaded = found
        return self._loaded

    def get(self, type_name: str) -> F | None:
        return self.factories().get(type_name)

    def register(self, factory: F) -> None:
        """For tests and embedding; packages should use the entry-point group."""
        self.factories()[factory.type] = factory


def component_type(component_id: str) -> str:
    """`type/name` ids allow two instances of one type, as in the Collector."""
    return component_id.split("/", 1)[0]
