"""A faster `dataclasses.replace` for the domain's frozen state records (a hot path of folds).

`dataclasses.replace` inspects the class's fields on every call; an aggregate's evolve calls
it once per event, so a million-event fold spends a third of its time there (issue 17's as-of
profile). `replacer(cls)` writes, once per class, a function taking the same keyword changes
and building the new instance directly. It behaves as `dataclasses.replace` for classes whose
fields are all init fields (every state record here): unknown names raise TypeError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_UNSET: Any = object()
_OWN_NAMES = frozenset({"_replacer_obj", "_replacer_cls", "_replacer_unset"})  # the code's own


def replacer(cls: type[T]) -> Callable[..., T]:
    """`replace(obj, **changes)` for instances of the dataclass `cls` (all fields init)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if any(not f.init for f in fields):
        raise TypeError(f"{cls.__name__}: replacer needs every field to be an init field")
    names = [f.name for f in fields]
    if taken := sorted(set(names) & _OWN_NAMES):
        raise TypeError(f"{cls.__name__}: replacer cannot take a field named {taken[0]}")
    params = ", ".join(f"{n}=_replacer_unset" for n in names)
    args = ", ".join(f"{n}=_replacer_obj.{n} if {n} is _replacer_unset else {n}" for n in names)
    source = f"def replace(_replacer_obj, /, *, {params}):\n    return _replacer_cls({args})\n"
    namespace: dict[str, Any] = {"_replacer_cls": cls, "_replacer_unset": _UNSET}
    exec(source, namespace)  # code built from the class's own field names
    replace: Callable[..., T] = namespace["replace"]
    replace.__qualname__ = f"replacer({cls.__name__})"
    replace.__doc__ = f"dataclasses.replace for {cls.__name__}, without the field inspection."
    return replace
