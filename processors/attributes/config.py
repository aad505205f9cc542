"""The `attributes:` block. Every key is documented in README.md beside this file.

Per-action rules are checked here, once, so that a wrong action is a config error that names the
offending key (`processors.attributes.actions.2.new_key`) rather than a silent no-op at run time.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from core.processor import ProcessorConfig
from processors.keyglob import glob_to_re2, is_glob, re2_error

ActionName = Literal["insert", "update", "upsert", "delete", "hash", "rename"]
Scope = Literal["span", "resource"]


def _plain_value(value: Any) -> Any:
    """YAML scalars, lists and mappings; an unquoted YAML date (2024-01-01) is taken as its text."""
    if isinstance(value, dt.date):  # datetime is a date too
        return value.isoformat()
    if value is None or isinstance(value, str | bool | int | float | list | dict):
        return value
    raise ValueError("expected a string, number, boolean, list or mapping")


# stored in the lake's string maps as decode stores OTLP values: strings as they are, the rest as JSON
PlainValue = str | bool | int | float | list[Any] | dict[str, Any]
AttributeValue = Annotated[PlainValue | None, PlainValidator(_plain_value)]

GLOB_ACTIONS = frozenset({"delete", "hash"})
VALUE_ACTIONS = frozenset({"insert", "update", "upsert"})
# which of the optional fields each action uses; setting any other one is an error
_USES: dict[str, frozenset[str]] = {
    "insert": frozenset({"value", "from_attribute"}),
    "update": frozenset({"value", "from_attribute"}),
    "upsert": frozenset({"value", "from_attribute"}),
    "delete": frozenset(),
    "hash": frozenset(),
    "rename": frozenset({"new_key"}),
}
_OPTIONAL = ("value", "from_attribute", "new_key")


def encode_value(value: PlainValue) -> str:
    """The string the lake stores for a configured value, the same encoding decode uses for OTLP."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


class AttributeAction(ProcessorConfig):
    # the attribute key the action works on; a glob (fnmatch: * ? [seq] [!seq]) for delete and hash
    key: str = Field(min_length=1)
    action: ActionName
    # insert/update/upsert: the value to set (non-strings are stored JSON-encoded)
    value: AttributeValue = None
    # insert/update/upsert: copy the value of this key (same scope) instead of a literal value
    from_attribute: str | None = Field(None, min_length=1)
    # rename: the key's new name
    new_key: str | None = Field(None, min_length=1)
    # span: the span's `attributes`; resource: `resource_attributes`
    scope: Scope = "span"

    @model_validator(mode="after")
    def _fields_fit_action(self) -> AttributeAction:
        issues: list[InitErrorDetails] = []

        def issue(loc: str, kind: str, message: str, value: Any = None) -> None:
            issues.append(InitErrorDetails(type=PydanticCustomError(kind, message), loc=(loc,), input=value))

        action, given = self.action, self.model_fields_set
        for name in _OPTIONAL:
            if name in given and name not in _USES[action]:
                issue(name, "unused_field", f"not used by action {action}", getattr(self, name))
        if action in VALUE_ACTIONS:
            if "value" in given and self.value is None:
                issue("value", "null_value", "null is not a value; to remove an attribute, use delete")
            elif self.value is None and self.from_attribute is None:
                issue("value", "missing", f"required when action is {action} (or set from_attribute)")
            if self.value is not None and self.from_attribute is not None:
                issue("from_attribute", "conflict", "not together with value", self.from_attribute)
            if self.from_attribute == self.key:
                issue("from_attribute", "same_key", "must differ from key", self.from_attribute)
        if action == "rename":
            if self.new_key is None:
                issue("new_key", "missing", "required when action is rename")
            elif self.new_key == self.key:
                issue("new_key", "same_key", "must differ from key", self.new_key)
        if is_glob(self.key):
            if action not in GLOB_ACTIONS:
                issue("key", "glob_not_allowed", "a glob (* ? [) only works with delete and hash", self.key)
            elif (err := re2_error(glob_to_re2(self.key))) is not None:
                issue("key", "invalid_glob", f"not a usable glob: {err}", self.key)
        if issues:
            raise ValidationError.from_exception_data(type(self).__name__, issues)
        return self

    @property
    def value_string(self) -> str | None:
        return None if self.value is None else encode_value(self.value)


class AttributesConfig(ProcessorConfig):
    # applied in order; each action sees the result of the ones before it
    actions: list[AttributeAction] = Field(min_length=1)
    # environment variable holding the HMAC key for hash actions (read once, when the processor is built)
    hash_key_env: str = Field("TRACELAKE_HASH_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
