"""The record of the HLA reference in use: a new event only when something changed."""

from __future__ import annotations

import pytest

from services.matching.domain.reference import (
    FileChecksum,
    HlaReferenceLoaded,
    RecordReference,
    ReferenceState,
    adopt_at_start,
    decide,
    evolve,
)
from shared.errors import PreconditionFailed

V358 = RecordReference("3.58.0", "ipd-imgt-hla-3.58.0+kir-ligand-2+rank-2", {"A": "1"}, "/r")


def after(*commands: RecordReference) -> ReferenceState:
    state = ReferenceState()
    for command in commands:
        for event in decide(state, command):
            state = evolve(state, event)
    return state


def test_the_first_start_records_the_release_with_its_checksums():
    (event,) = decide(ReferenceState(), V358)
    assert event == HlaReferenceLoaded(
        "3.58.0", V358.classification_version, (FileChecksum("A", "1"),), "/r"
    )


def test_the_same_release_again_records_nothing_even_from_another_directory():
    moved = RecordReference(V358.release, V358.classification_version, {"A": "1"}, "/elsewhere")
    assert decide(after(V358), V358) == []
    assert decide(after(V358), moved) == []


@pytest.mark.parametrize(
    "changed",
    [
        RecordReference("3.59.0", "ipd-imgt-hla-3.59.0+kir-ligand-2+rank-2", {"A": "2"}, "/r"),
        RecordReference("3.58.0", V358.classification_version, {"A": "edited"}, "/r"),
        RecordReference("3.58.0", "ipd-imgt-hla-3.58.0+kir-ligand-3+rank-2", {"A": "1"}, "/r"),
        RecordReference("", "no-hla-reference+kir-ligand-2+rank-2", {}, "none configured"),
    ],
    ids=["new release", "files changed", "rules changed", "reference removed"],
)
def test_any_change_is_recorded(changed):
    assert decide(after(V358), changed) != []


def test_an_absurd_source_is_refused():
    with pytest.raises(PreconditionFailed):
        decide(ReferenceState(), RecordReference("", "v", {}, "x" * 5000))


def test_the_service_adopts_a_first_release_but_never_moves_to_another():
    assert adopt_at_start(ReferenceState(), V358) == decide(ReferenceState(), V358)
    none = RecordReference("", "no-hla-reference+kir-ligand-2+rank-2", {}, "none configured")
    assert adopt_at_start(after(none), V358) != []  # nothing on record yet: adopted
    other = RecordReference("3.59.0", "ipd-imgt-hla-3.59.0+kir-ligand-2+rank-2", {"A": "2"}, "/n")
    with pytest.raises(PreconditionFailed, match="needs an operator"):
        adopt_at_start(after(V358), other)
    assert adopt_at_start(after(V358), none) == []  # the approved release stays on record
    assert after(V358, none).approved == after(V358).approved


def test_same_release_compares_name_and_files():
    state = after(V358)
    assert state.same_release("3.58.0", {"A": "1"})
    assert not state.same_release("3.58.0", {"A": "edited"})
    assert not ReferenceState().same_release("3.58.0", {"A": "1"})
