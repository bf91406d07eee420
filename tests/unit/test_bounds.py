"""The request bounds table: every string and repeated field of every request is bounded."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import cellbank
import pytest
from cellbank.donor.v1 import donor_service_pb2 as dpb
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.storage.v1 import storage_service_pb2 as spb
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from shared import bounds
from shared.bounds import violation
from shared.errors import InvalidArgument
from shared.settings import Settings


def request_types() -> Iterator[Descriptor]:
    """The input message of every method of every service generated from protos/."""
    for root in sorted(set(cellbank.__path__)):
        for path in sorted(Path(root).glob("*/v1/*_pb2.py")):
            module = importlib.import_module(f"cellbank.{path.parent.parent.name}.v1.{path.stem}")
            for service in module.DESCRIPTOR.services_by_name.values():
                yield from (method.input_type for method in service.methods)


Chain = tuple[FieldDescriptor, ...]  # the field and the message fields leading to it


def bounded_fields(descriptor: Descriptor, chain: Chain = ()) -> Iterator[Chain]:
    """Every string and repeated field, nested (and repeated) messages included."""
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING or field.is_repeated:
            yield (*chain, field)
        if field.message_type is not None and field not in chain:
            yield from bounded_fields(field.message_type, (*chain, field))


def path_of(chain: Chain) -> str:
    return ".".join(
        [f"{f.name}[0]" if f.is_repeated else f.name for f in chain[:-1]] + [chain[-1].name]
    )


CASES = [
    pytest.param(d, chain, id=f"{d.name}.{path_of(chain)}")
    for d in {d.full_name: d for d in request_types()}.values()
    for chain in bounded_fields(d)
]


def filled(descriptor: Descriptor, chain: Chain, size: int) -> Message:
    """A request with only the last field of `chain` set: `size` characters, or `size` items."""
    message = message_factory.GetMessageClass(descriptor)()
    target = message
    for parent in chain[:-1]:
        target = getattr(target, parent.name)
        target = target.add() if parent.is_repeated else target
    field = chain[-1]
    if not field.is_repeated:
        setattr(target, field.name, "é" * size)  # characters, not UTF-8 bytes, are counted
        return message
    items = getattr(target, field.name)
    for _ in range(size):
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            items.add()
        else:
            items.append("x" if field.type == FieldDescriptor.TYPE_STRING else 0)
    return message


@pytest.mark.parametrize(("descriptor", "chain"), CASES)
def test_every_request_field_is_bounded_and_named_when_over(descriptor, chain):
    field = chain[-1]
    limit = bounds.max_items(field) if field.is_repeated else bounds.max_chars(field)
    assert violation(filled(descriptor, chain, limit)) == ""
    unit = "items" if field.is_repeated else "characters"
    over = violation(filled(descriptor, chain, limit + 1))
    assert over == f"{path_of(chain)}: at most {limit} {unit} (got {limit + 1})"


def test_a_600kb_cancel_reason_is_refused_naming_the_field():
    request = hpb.CancelOrderRequest(order_id="ORD-LON-1", reason="x" * 600_000)
    assert violation(request) == "reason: at most 2000 characters (got 600000)"


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (hpb.CancelOrderRequest(order_id="O" * 201, reason="r"), "order_id: at most 200"),
        (
            hpb.ConfirmReceiptRequest(order_id="O", signature=hpb.Signature(meaning="m" * 201)),
            "signature.meaning: at most 200 characters",
        ),
        (
            hpb.PlaceOrderRequest(patient=hpb.PatientProfile(hla_alleles=["A*02:01", "A" * 201])),
            "patient.hla_alleles[1]: at most 200 characters (got 201)",
        ),
        (
            hpb.PlaceOrderRequest(patient=hpb.PatientProfile(hla_alleles=["A*02:01"] * 33)),
            "patient.hla_alleles: at most 32 items (got 33)",
        ),
        (
            dpb.RecordTypingRequest(hla=[dpb.HlaLocus(locus="A", alleles=["A*01:01", "x" * 300])]),
            "hla[0].alleles[1]: at most 200 characters (got 300)",
        ),
        (
            hpb.ReportAdverseEventRequest(severity="s" * 201, description="d"),
            "severity: at most 200 characters (got 201)",
        ),
    ],
)
def test_nested_and_repeated_fields_are_named_by_path(request_, expected):
    assert violation(request_).startswith(expected)


def test_overrides_give_a_contract_its_own_bound():
    assert violation(hpb.ReportAdverseEventRequest(description="d" * 4_000)) == ""
    assert violation(hpb.ReportAdverseEventRequest(description="d" * 4_001)).startswith(
        "description: at most 4000 characters"
    )
    boxes = [f"R{r}/B{b}" for r in range(1, 51) for b in range(1, 41)]
    assert violation(spb.RegisterTankRequest(tank_id="T1", segregated_boxes=boxes)) == ""


def test_the_requests_of_every_service_are_checked():
    services = {d.full_name.split(".")[1] for d in request_types()}
    assert services >= {"donor", "manufacturing", "storage", "matching", "delivery", "hospital"}
    assert "operator" in services and len(CASES) > 100


def test_every_override_names_a_real_request_field():
    names = {chain[-1].full_name for d in request_types() for chain in bounded_fields(d)}
    assert set(bounds.CHARS) | set(bounds.COUNTS) <= names


ENV = {
    "CELLBANK_SITE_ID": "LON",
    "CELLBANK_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "CELLBANK_DATABASE_URL": "postgresql://localhost/x",
    "CELLBANK_OIDC_ISSUER": "http://127.0.0.1:8080/realms/cellbank",
}


def test_the_envelope_and_concurrent_call_limits_are_settings_with_safe_defaults():
    default = Settings.from_env(ENV)
    assert default.max_envelope_bytes == bounds.MAX_ENVELOPE_BYTES < 1_048_576
    assert default.grpc_max_concurrent_rpcs == bounds.MAX_CONCURRENT_RPCS
    tuned = Settings.from_env(
        ENV | {"CELLBANK_MAX_ENVELOPE_BYTES": "500000", "CELLBANK_GRPC_MAX_CONCURRENT_RPCS": "64"}
    )
    assert (tuned.max_envelope_bytes, tuned.grpc_max_concurrent_rpcs) == (500_000, 64)
    with pytest.raises(InvalidArgument, match="CELLBANK_MAX_ENVELOPE_BYTES"):
        Settings.from_env(ENV | {"CELLBANK_MAX_ENVELOPE_BYTES": "1MB"})
