"""``typing.NamedTuple``'s class syntax at run time without importing :mod:`typing`.

The runtime starts for every container, and ``import typing`` plus typing's NamedTuple class
creation (it type-checks every annotation) cost ~6 ms of a ``create`` for the records of
:mod:`pydeskd.runtime.spec` alone, where :func:`collections.namedtuple` (already imported by
``re`` and ``json``) builds the same classes in ~1.3 ms. Modules on the runtime's start-up
path write::

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import NamedTuple
    else:
        from pydeskd.runtime.record import NamedTuple

so that mypy checks them as ordinary ``typing.NamedTuple``s, and at run time get the class
``collections.namedtuple`` makes (the one typing.NamedTuple makes too) with the same fields,
defaults, docstring, methods and properties. Only what typing.NamedTuple allows is accepted:
no field after a defaulted one, no underscore field names, no overriding the tuple machinery.
This module must never import typing (or anything not already loaded by the runtime's CLI).
"""

from __future__ import annotations

import collections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Called with computed names, which mypy's namedtuple() special case cannot follow.
_namedtuple: Any = collections.namedtuple

# As typing.NamedTuple: these would break the class that namedtuple builds.
_PROHIBITED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                         "_field_defaults", "_make", "_replace", "_asdict", "_source"})
# Set by the class statement itself, or by namedtuple; not copied onto the built class.
_SPECIAL = frozenset({"__module__", "__qualname__", "__annotations__", "__doc__",
                      "__orig_bases__", "__classcell__"})


class _RecordMeta(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
        if not bases:  # the NamedTuple base below
            return super().__new__(mcs, name, bases, namespace)
        if bases != (NamedTuple,):
            raise TypeError(f"{name}: a record class derives from NamedTuple only")
        annotations: dict[str, Any] = namespace.get("__annotations__", {})
        fields = tuple(annotations)
        defaults = []
        for field in fields:
            if field in namespace:
                defaults.append(namespace[field])
            elif defaults:
                raise TypeError(f"{name}: non-default field {field!r} follows a default one")
        # rename=False: namedtuple itself rejects underscore and keyword field names.
        cls = _namedtuple(name, fields, defaults=defaults, module=namespace["__module__"])
        for key, value in namespace.items():
            if key in _PROHIBITED:
                raise AttributeError(f"{name}: cannot overwrite NamedTuple attribute {key}")
            if key not in _SPECIAL and key not in fields:
                setattr(cls, key, value)
        cls.__qualname__ = namespace.get("__qualname__", name)
        cls.__annotations__ = annotations
        if namespace.get("__doc__") is not None:
            cls.__doc__ = namespace["__doc__"]
        return cls


class NamedTuple(metaclass=_RecordMeta):
    """Base of record classes at run time (mypy sees typing.NamedTuple instead)."""

    __slots__ = ()
