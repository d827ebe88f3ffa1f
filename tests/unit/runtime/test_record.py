"""record.NamedTuple builds the classes typing.NamedTuple builds, and the runtime's start-up path
imports neither typing nor dataclasses (nor inspect, which dataclasses pulls in)."""

from __future__ import annotations

import subprocess
import sys
import types
import typing

import pytest

from pydeskd.runtime import record

# Every runtime module that create, start, state, kill or delete may import.
START_UP_MODULES = (
    "cli", "container", "state", "log", "errors", "init", "spec", "syscalls", "rootfs",
    "process", "capabilities", "devices", "securejoin", "seccomp", "console", "hooks",
    "copyup", "cgroups", "cgroups.v1", "cgroups.v2", "cgroups.layout", "cgroups.devices",
    "cgroups.files", "cgroups.ebpf",
)


def _point_class(base: type) -> type:
    """The same class body under either base (a record with a method, a property, a doc)."""

    class Point(base):
        """A point."""

        x: int
        y: int = 0
        tags: tuple[str, ...] = ()

        def moved(self, dx: int) -> Point:
            return self._replace(x=self.x + dx)

        @property
        def norm1(self) -> int:
            return abs(self.x) + abs(self.y)

    return Point


@pytest.fixture(params=["typing", "record"])
def point(request: pytest.FixtureRequest) -> type:
    return _point_class(typing.NamedTuple if request.param == "typing"
                        else record.NamedTuple)


def test_fields_defaults_and_construction(point: type) -> None:
    assert point._fields == ("x", "y", "tags")
    assert point._field_defaults == {"y": 0, "tags": ()}
    p = point(3)
    assert (p.x, p.y, p.tags) == (3, 0, ())
    assert point(x=1, y=2, tags=("a",)).tags == ("a",)
    with pytest.raises(TypeError):
        point()
    with pytest.raises(TypeError):
        point(1, 2, (), 4)


def test_methods_properties_doc_and_names(point: type) -> None:
    p = point(-2, 5)
    assert p.moved(3) == point(1, 5)
    assert p.norm1 == 7
    assert point.__doc__ == "A point."
    assert point.__name__ == "Point"
    assert point.__qualname__.endswith("_point_class.<locals>.Point")
    assert point.__module__ == __name__
    assert repr(p) == "Point(x=-2, y=5, tags=())"


def test_immutable_hashable_and_replace(point: type) -> None:
    p = point(1, 2)
    with pytest.raises(AttributeError):
        p.x = 5
    with pytest.raises(AttributeError):
        p.z = 5  # no __dict__: __slots__ = ()
    assert hash(p) == hash(point(1, 2))
    assert p._replace(y=9) == point(1, 9)
    assert p._asdict() == {"x": 1, "y": 2, "tags": ()}
    assert isinstance(p, tuple)


def _make(base: object, body: dict[str, object]) -> type:
    def fill(namespace: dict[str, object]) -> None:
        namespace.update(body, __module__=__name__)

    return types.new_class("Bad", (base,), exec_body=fill)


@pytest.mark.parametrize("base", [typing.NamedTuple, record.NamedTuple], ids=["typing", "record"])
def test_rejects_what_typing_rejects(base: object) -> None:
    assert _make(base, {"__annotations__": {"a": "int", "b": "int"}, "b": 1})._fields == ("a", "b")
    with pytest.raises(TypeError, match=r"[Nn]on-default"):
        _make(base, {"__annotations__": {"a": "int", "b": "int"}, "a": 1})
    with pytest.raises(AttributeError, match="_replace"):
        _make(base, {"__annotations__": {"a": "int"}, "_replace": None})
    with pytest.raises(ValueError, match="underscore"):
        _make(base, {"__annotations__": {"_a": "int"}})


def test_the_runtime_records_are_plain_namedtuples() -> None:
    from pydeskd.runtime.spec import Linux, Namespace, Root, Spec

    spec = Spec("1.0.2", Root("rootfs"))
    assert spec.linux == Linux() and spec.hooks.prestart == () and spec.process is None
    assert Linux(namespaces=(Namespace("pid"),)).namespace("pid") == Namespace("pid", "")
    assert Linux().namespace("uts") is None
    assert type(Spec) is type  # built by collections.namedtuple: no metaclass left behind


def test_start_up_path_imports_no_typing_or_dataclasses() -> None:
    modules = ", ".join(f"pydeskd.runtime.{m}" for m in START_UP_MODULES)
    code = (f"import sys, {modules}\n"
            "print(' '.join(m for m in ('typing', 'dataclasses', 'inspect') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    assert out == "", f"imported at start-up: {out}"
