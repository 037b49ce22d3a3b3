"""One small registry per kind of component, filled by a decorator (as timm registers models).

A name maps straight to a class; an unknown name raises with the list of known ones.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}
        self._tags: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **tags: Any) -> Callable[[type[T]], type[T]]:
        """Decorator: `@ENCODERS.register("image_cnn", modality="image")`."""

        def add(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = cls
            self._tags[name] = tags
            return cls

        return add

    def get(self, name: str) -> type[T]:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self, pattern: str = "*", **tags: Any) -> list[str]:
        """Registered names matching a glob pattern and every given tag."""
        return sorted(
            name
            for name in self._entries
            if fnmatch.fnmatch(name, pattern)
            and all(self._tags[name].get(key) == value for key, value in tags.items())
        )

    def tags(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._tags[name])
