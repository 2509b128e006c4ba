"""One registry pattern for everything orchestra finds by name.

Techniques, scorers, process reward models, backends, task kinds and draft
forwards are each a `Registry`: a name -> entry map that fills itself on first
use from its built-in modules and then from its entry-point group, so a plugin
package adds entries by declaring an entry point and nothing else. Every
registry behaves the same way:

- registering a second, different entry under a taken name raises `DuplicateName`
  (registering the same object again, e.g. a module imported twice, is allowed);
- looking up an unknown name raises `UnknownName`, whose message suggests the
  closest known names. It is a `KeyError` for lookups and a `ValueError`, so
  pydantic reports it as a validation error of the field that named it.

An entry point names either a module, whose import registers its entries
(through the kind's decorator), or the entry itself, which is then registered
under the entry point's name. Built-ins with heavy imports (the local backend
needs torch) can be declared `lazy`: name -> "module:attribute", imported the
first time that name is looked up, so listing names costs nothing.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from orchestra.errors import unknown_name

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """A name no registry entry has; the message lists the closest known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateName(ValueError):
    """A second, different entry registered under a name already taken."""


class Registry(Generic[T]):
    """Entries of one kind by name: built-in modules first, then the entry-point group."""

    def __init__(
        self, kind: str, group: str, builtin_modules: Sequence[str] = (), lazy: Mapping[str, str] | None = None
    ):
        #: What an entry is called in messages ("technique", "task kind", ...).
        self.kind = kind
        #: The entry-point group plugins declare their entries in.
        self.group = group
        self._builtin_modules = tuple(builtin_modules)
        self._lazy = dict(lazy or {})
        self._entries: dict[str, T] = {}
        self._loaded = False
        self._loading = False

    def add(self, name: str, entry: T) -> T:
        """Register `entry` under `name`; a different entry under a taken name raises."""
        known = self._entries.get(name)
        if known is not None and known is not entry and not _same_definition(known, entry):
            raise DuplicateName(f"{self.kind} {name!r} is already registered")
        lazy = self._lazy.get(name)
        if known is None and lazy is not None and lazy != _address(entry):
            raise DuplicateName(f"{self.kind} {name!r} is already registered (as {lazy})")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, make: Callable[[object], T] | None = None) -> Callable:
        """A decorator registering what it decorates (or `make(it)`) under `name`, returning it unchanged."""

        def register(obj):
            self.add(name, make(obj) if make else obj)
            return obj

        return register

    def get(self, name: str) -> T:
        """The entry registered under `name`; `UnknownName` (with suggestions) if there is none."""
        if name not in self._entries and name in self._lazy:
            module, _, attribute = self._lazy[name].partition(":")
            self.add(name, getattr(importlib.import_module(module), attribute))
        if name not in self._entries:
            self._load()
        if name in self._entries:
            return self._entries[name]
        raise UnknownName(unknown_name(self.kind, name, self.names()))

    def all(self) -> dict[str, T]:
        """Every entry, built-in and plugin, by name (lazy built-ins imported)."""
        self._load()
        for name in self._lazy:
            self.get(name)
        return dict(self._entries)

    def names(self) -> list[str]:
        """Every name, without importing lazy built-ins."""
        self._load()
        return sorted(set(self._entries) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True  # a built-in module that looks an entry up while it registers
        try:
            for module in self._builtin_modules:
                importlib.import_module(module)
            for point in entry_points(group=self.group):
                loaded = point.load()
                if not isinstance(loaded, types.ModuleType) and point.name not in self._entries:
                    self.add(point.name, loaded)
            self._loaded = True
        finally:
            self._loading = False


def _address(entry: object) -> str:
    """"module:QualifiedName" of a class or function, as lazy built-ins are declared."""
    return f"{getattr(entry, '__module__', '')}:{getattr(entry, '__qualname__', '')}"


def _same_definition(a: object, b: object) -> bool:
    """Two entries made from the same function or class (a re-executed module re-registers);
    dataclass entries (techniques, scorers, PRMs) are compared by the function they wrap."""
    fa, fb = getattr(a, "fn", a), getattr(b, "fn", b)
    return hasattr(fa, "__qualname__") and _address(fa) == _address(fb)
