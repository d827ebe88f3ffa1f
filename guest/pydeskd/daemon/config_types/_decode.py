"""Typed reads of one JSON object of an Engine API request, with the errors Docker gives.

Docker decodes a create request with Go's ``encoding/json``: field names match
case-insensitively, ``null`` leaves the default, unknown fields are ignored, and a value of
the wrong JSON type fails the whole request with
``invalid JSON: json: cannot unmarshal string into Go struct field CreateRequest.Env of type
[]string`` (HTTP 400). :class:`Fields` reproduces exactly that, so clients see the same
messages. It must never coerce a wrong type silently (``"1"`` is not the number 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydeskd.containerd.errors import InvalidArgument

_INT_RANGES = {
    "int": (-(2**63), 2**63 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint": (0, 2**64 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}


def json_kind(value: object) -> str:
    """The JSON type name Go's decoder uses in its messages."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


class Fields:
    """One JSON object, read field by field.

    ``struct`` is the Go type decoding this object and ``path`` the JSON path to it, as Go
    names them in errors: ``Go struct field HostConfig.HostConfig.Memory`` is field
    ``HostConfig.Memory`` of the struct type HostConfig.
    """

    def __init__(self, obj: Mapping[str, Any], struct: str = "CreateRequest", path: str = ""):
        self._obj = obj
        self._folded = {k.lower(): k for k in obj if isinstance(k, str)}
        self.struct = struct
        self.path = path

    def has(self, name: str) -> bool:
        return self.raw(name) is not None

    def raw(self, name: str) -> Any:
        if name in self._obj:
            return self._obj[name]
        key = self._folded.get(name.lower())
        return None if key is None else self._obj[key]

    def error(self, name: str, value: object, gotype: str) -> InvalidArgument:
        kind = json_kind(value)
        if kind == "number" and gotype in _INT_RANGES:
            # Go quotes the literal only when a number does not fit an integer type.
            kind = f"number {value}"
        return InvalidArgument(
            f"invalid JSON: json: cannot unmarshal {kind} into Go struct field "
            f"{self.struct}.{self.path}{name} of type {gotype}")

    def text(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(name, value, "string")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.opt_flag(name)
        return default if value is None else value

    def opt_flag(self, name: str) -> bool | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.error(name, value, "bool")
        return value

    def integer(self, name: str, gotype: str = "int64", default: int = 0) -> int:
        value = self.opt_integer(name, gotype)
        return default if value is None else value

    def opt_integer(self, name: str, gotype: str = "int64") -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        low, high = _INT_RANGES[gotype]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, value, gotype)
        if isinstance(value, float):
            if not value.is_integer():
                raise self.error(name, value, gotype)
            value = int(value)
        if not low <= value <= high:
            raise self.error(name, value, gotype)
        return value

    def str_list(self, name: str) -> tuple[str, ...] | None:
        """A ``[]string``; None when absent or null (Docker keeps that difference)."""
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.error(name, value, "[]string")
        for item in value:
            if item is not None and not isinstance(item, str):
                raise self.error(name, item, "string")
        return tuple("" if item is None else item for item in value)  # Go: null -> ""

    def str_slice(self, name: str) -> tuple[str, ...] | None:
        """Docker's StrSlice (Cmd, Entrypoint): a list of strings, or one string."""
        value = self.raw(name)
        if isinstance(value, str):
            return (value,)
        if value is not None and not isinstance(value, list):
            raise self.error(name, value, "string")  # StrSlice's fallback decode
        return self.str_list(name)

    def str_map(self, name: str) -> dict[str, str] | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(name, value, "map[string]string")
        for item in value.values():
            if item is not None and not isinstance(item, str):
                raise self.error(name, item, "string")
        return {k: "" if v is None else v for k, v in value.items()}

    def key_set(self, name: str, gotype: str) -> tuple[str, ...] | None:
        """A ``map[string]struct{}`` (ExposedPorts, Volumes): its keys, in order."""
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(name, value, gotype)
        for item in value.values():
            if item is not None and not isinstance(item, Mapping):
                raise self.error(name, item, "struct {}")
        return tuple(value)

    def obj(self, name: str, gotype: str) -> Fields | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(name, value, gotype)
        return Fields(value, _type_name(gotype), f"{self.path}{name}.")

    def obj_list(self, name: str, gotype: str) -> list[Fields] | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.error(name, value, f"[]{gotype}")
        out = []
        for item in value:
            if item is None:
                continue
            if not isinstance(item, Mapping):
                raise self.error(name, item, gotype)
            out.append(Fields(item, _type_name(gotype), f"{self.path}{name}."))
        return out


def _type_name(gotype: str) -> str:
    """"container.RestartPolicy" -> "RestartPolicy" (Go prints the bare type name)."""
    return gotype.rpartition(".")[2].lstrip("*")
