"""replacer(cls): dataclasses.replace, written once per class."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kernel.records import replacer


@dataclass(frozen=True, slots=True)
class State:
    a: str = ""
    b: int = 0
    c: tuple[str, ...] = ()
    d: dict[str, int] = field(default_factory=dict)


fast_replace = replacer(State)
states = st.builds(State, st.text(), st.integers(), st.lists(st.text()).map(tuple))
changes = st.fixed_dictionaries(
    {}, optional={"a": st.text(), "b": st.integers(), "c": st.lists(st.text()).map(tuple)}
)


@given(states, changes)
def test_it_builds_what_dataclasses_replace_builds(state: State, change: dict[str, Any]):
    assert fast_replace(state, **change) == dataclasses.replace(state, **change)


def test_unknown_fields_and_positional_changes_are_refused_as_replace_refuses_them():
    with pytest.raises(TypeError):
        fast_replace(State(), e=1)
    with pytest.raises(TypeError):
        fast_replace(State(), "x")


def test_a_field_outside_init_is_refused_when_the_replacer_is_built():
    @dataclass(frozen=True)
    class Derived:
        a: str = ""
        b: int = field(default=0, init=False)

    with pytest.raises(TypeError, match="init field"):
        replacer(Derived)


def test_fields_named_like_the_generated_codes_own_names_work_or_are_refused():
    @dataclass(frozen=True)
    class Odd:
        cls: str = ""
        obj: int = 0

    assert replacer(Odd)(Odd("a", 1), cls="b") == Odd("b", 1)

    @dataclass(frozen=True)
    class Clash:
        _replacer_obj: int = 0

    with pytest.raises(TypeError, match="cannot take a field named _replacer_obj"):
        replacer(Clash)
