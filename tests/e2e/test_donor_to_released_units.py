"""From a consenting donor to released, labelled NK units — driven over gRPC like a bank would."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import grpc
import jwt
import pytest
from cellbank.donor.v1 import donor_service_pb2 as dpb
from cellbank.manufacturing.v1 import manufacturing_service_pb2 as mpb

from deploy.demo import HLA, PASSING_QC, auth, now, ts
from deploy.infra import Endpoints
from services.kernel.isbt128 import din_check_character
from services.manufacturing.adapters.codec import CODEC
from shared.signing import RecordLink
from tests.e2e.bank_site import BankSite, bank_site, projected, refused


@pytest.fixture
async def site(endpoints: Endpoints):
    async with bank_site(endpoints) as running:
        yield running


async def test_donor_is_screened_collected_manufactured_and_released_into_units(site: BankSite):
    today = now().date()
    donor_id = await site.eligible_donor(today)
    collection = await site.collect(donor_id, now())
    din = collection.din
    assert len(din) == 13 and collection.check_character == din_check_character(din)
    checked = await site.donors.ValidateDin(
        dpb.ValidateDinRequest(din=f"{din}{collection.check_character}"), metadata=auth("op-bob")
    )
    assert checked.din == din and checked.type3_flag == collection.type3_flag
    for flag in ("00", "42", f"{collection.type3_flag:02d}"):  # unused, Type 2, Type 3 flags
        scanned = await site.donors.ValidateDin(
            dpb.ValidateDinRequest(din=f"={din}{flag}"), metadata=auth("op-bob")
        )
        assert (scanned.din, scanned.type3_flag) == (din, collection.type3_flag)

    view = await projected(
        lambda: site.donors.GetDonor(
            dpb.GetDonorRequest(donor_id=donor_id), metadata=auth("op-bob")
        ),
        until=lambda v: din in v.dins,
        what="donor read model",
    )
    assert (view.eligibility, view.consent, view.cmv) == ("ELIGIBLE", "GIVEN", "POSITIVE")
    assert [a for h in view.hla if h.locus == "A" for a in h.alleles] == ["A*02:01", "A*24:02"]

    batch_id = await site.start_batch(din)
    cryopreserved = now()
    await site.process(batch_id, cryopreserved)
    await site.qc(batch_id, now(), PASSING_QC)
    released = await site.release(batch_id)

    assert [u.product_code for u in released.units] == ["S1001VA0", "S1001VB0"]
    for unit in released.units:
        assert unit.din == din and unit.status == "RELEASED" and not unit.segregated
        assert unit.unit_id == f"{din}-{unit.product_code}"
        # shelf life counts from cryopreservation (UTC day), not from the QA signature
        expires_on = cryopreserved.date() + timedelta(days=5 * 365)
        assert unit.expires_on == expires_on.isoformat()
        assert not unit.labels
    units = await projected(
        lambda: site.manufacturing.ListUnits(
            mpb.ListUnitsRequest(din=din), metadata=auth("op-bob")
        ),
        until=lambda r: len(r.units) == 2,
        what="units read model",
    )
    assert {u.batch_id for u in units.units} == {batch_id}
    batch = await site.manufacturing.GetBatch(
        mpb.GetBatchRequest(batch_id=batch_id), metadata=auth("op-bob")
    )
    assert batch.status == "RELEASED" and batch.released_by == "Quinn Adeyemi"
    assert all(q.passed for q in batch.qc) and len(batch.qc) == len(PASSING_QC)
    await release_signature_is_linked_to_its_event(site, batch_id)


async def release_signature_is_linked_to_its_event(site: BankSite, batch_id: str) -> None:
    """Part 11: the QA signature names the person (name and subject from the access token)
    and is linked to its record: the id of the event holding it, the hash of what was signed."""
    pool = site.hosts[1].pool
    assert pool is not None
    row = await pool.fetchrow(
        "SELECT event_id::text, aggregate_id, aggregate_version, event_type, payload FROM events"
        " WHERE aggregate_id = $1 AND event_type = 'cellbank.manufacturing.v1.BatchReleased'",
        batch_id,
    )
    assert row is not None
    released = CODEC.decode(row["event_type"], row["payload"])
    signature = released.signature
    assert (signature.name, signature.subject) == ("Quinn Adeyemi", token_subject("qa-quinn"))
    assert signature.meaning == "Released for clinical use"
    assert signature.event_id == row["event_id"]
    link = RecordLink(row["aggregate_id"], row["aggregate_version"], row["event_id"])
    unlinked = replace(released, signature=replace(signature, event_id="", content_hash=""))
    assert unlinked.sealed(link) == released  # the hash is of exactly what was signed


def token_subject(who: str) -> str:
    """The `sub` of a demo person's access token (the signature must carry it)."""
    token = dict(auth(who))["authorization"].removeprefix("Bearer ")
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


async def _batch_ready_for_release(site: BankSite, qc=PASSING_QC) -> tuple[str, str]:
    donor_id = await site.eligible_donor(now().date())
    din = (await site.collect(donor_id, now())).din
    batch_id = await site.start_batch(din)
    await site.process(batch_id, now())
    await site.qc(batch_id, now(), qc)
    return donor_id, batch_id


async def test_release_with_failed_qc_is_refused_naming_the_test_and_persists_nothing(
    site: BankSite,
):
    failing = [(t, 60.0 if t == "viability" else v, x) for t, v, x in PASSING_QC]
    _, batch_id = await _batch_ready_for_release(site, failing)
    before = await site.event_counts()
    details = await refused(site.release(batch_id), grpc.StatusCode.FAILED_PRECONDITION)
    assert "QC viability: 60 does not meet ≥ 70 %" in details
    assert await site.event_counts() == before


async def test_release_of_a_batch_never_cryopreserved_is_refused_and_persists_nothing(
    site: BankSite,
):
    donor_id = await site.eligible_donor(now().date())
    din = (await site.collect(donor_id, now())).din
    batch_id = await site.start_batch(din)
    await site.manufacturing.RecordProcessStep(
        mpb.RecordProcessStepRequest(
            batch_id=batch_id, reason="batch record", step="HARVEST", performed_at=ts(now()),
            viable_cells=2e9, viability_pct=93,
        ),
        metadata=auth("op-alice"),
    )  # fmt: skip
    await site.qc(batch_id, now(), PASSING_QC)
    before = await site.event_counts()
    details = await refused(site.release(batch_id), grpc.StatusCode.FAILED_PRECONDITION)
    assert "cryopreservation: no CRYOPRESERVATION step recorded" in details
    assert await site.event_counts() == before


async def test_operator_who_ran_the_batch_cannot_sign_its_release(site: BankSite):
    _, batch_id = await _batch_ready_for_release(site)
    before = await site.event_counts()
    details = await refused(
        site.release(batch_id, token="qa-alice"), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "two-person rule" in details
    # bob is no QA: the access table refuses him before any handler runs
    await refused(site.release(batch_id, token="op-bob"), grpc.StatusCode.PERMISSION_DENIED)
    assert await site.event_counts() == before


@pytest.mark.parametrize("meaning", ["", "looks fine to me", "x" * 201])
async def test_a_release_means_one_of_the_qa_release_meanings(site: BankSite, meaning: str):
    _, batch_id = await _batch_ready_for_release(site)
    before = await site.event_counts()
    request = mpb.ReleaseBatchRequest(
        batch_id=batch_id, reason="batch record reviewed", signature_meaning=meaning,
        units=[mpb.UnitSpec(viable_nk_cells=5e8, cd3_cells=2e5, volume_ml=20)],
    )  # fmt: skip
    details = await refused(
        site.manufacturing.ReleaseBatch(request, metadata=auth("qa-quinn")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "signature_meaning" in details
    assert await site.event_counts() == before


async def test_a_stale_sign_in_cannot_sign_a_release(endpoints: Endpoints):
    """Part 11 (11.200): signing needs a recent authentication; with a window shorter than
    the token's age QA must sign in again, and nothing is recorded."""
    async with bank_site(endpoints, signing_window_seconds=1e-6) as stale:
        _, batch_id = await _batch_ready_for_release(stale)
        before = await stale.event_counts()
        details = await refused(stale.release(batch_id), grpc.StatusCode.UNAUTHENTICATED)
        assert "sign in again" in details
        assert await stale.event_counts() == before


async def test_donor_found_positive_before_release_blocks_it(site: BankSite):
    donor_id, batch_id = await _batch_ready_for_release(site)
    reply = await site.donors.RecordScreeningResult(
        dpb.RecordScreeningResultRequest(
            donor_id=donor_id, reason="look-back test", marker="HBsAg", result="POSITIVE",
            specimen_date=now().date().isoformat(),
        ),
        metadata=auth("op-alice"),
    )  # fmt: skip
    assert reply.eligibility == "INELIGIBLE"
    # Manufacturing learns it through Kafka; once it has, the release is refused.
    # (A release that raced ahead is caught by lookback/recall: PositiveResultAfterCollection.)
    await site.manufacturing_caught_up()
    before = await site.event_counts()
    details = await refused(site.release(batch_id), grpc.StatusCode.FAILED_PRECONDITION)
    assert "donor eligibility: donor is INELIGIBLE" in details
    assert await site.event_counts() == before


async def test_ineligible_donor_cannot_be_collected_and_nothing_is_written(site: BankSite):
    op = auth("op-alice")
    donor = await site.donors.RegisterDonor(
        dpb.RegisterDonorRequest(donor_ref="DR-NEW-0001", reason="walk-in"), metadata=op
    )
    await site.donors.GiveConsent(
        dpb.GiveConsentRequest(
            donor_id=donor.donor_id, reason="signed", consent_form="NK-CONSENT-v3"
        ),
        metadata=op,
    )
    before = await site.event_counts()
    details = await refused(
        site.collect(donor.donor_id, now()), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "donor not eligible for collection" in details and "anti-HIV-1/2: no result" in details
    assert await site.event_counts() == before  # not even a DIN was taken


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"hla": [dpb.HlaLocus(locus="A", alleles=["A*2:01", "A*01:01"])]}, "hla.A"),
        ({"abo": "Z"}, "abo"),
        ({"kir_genes": ["KIR9XX9"]}, "kir"),
    ],
)
async def test_malformed_typing_is_invalid_argument_naming_the_field(
    site: BankSite, request_fields, field
):
    op = auth("op-alice")
    donor = await site.donors.RegisterDonor(
        dpb.RegisterDonorRequest(donor_ref="DR-TYPE-0001", reason="walk-in"), metadata=op
    )
    base = {
        "donor_id": donor.donor_id,
        "reason": "typing",
        "hla": [dpb.HlaLocus(locus=k, alleles=v) for k, v in HLA.items()],
        "abo": "O",
        "rh": "NEG",
        "cmv": "NEGATIVE",
    }
    if "hla" in request_fields:
        base["hla"] = [h for h in base["hla"] if h.locus != "A"] + request_fields.pop("hla")
    before = await site.event_counts()
    details = await refused(
        site.donors.RecordTyping(
            dpb.RecordTypingRequest(**{**base, **request_fields}), metadata=op
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith(f"{field}:")
    assert await site.event_counts() == before


async def test_negative_cell_count_and_bad_din_are_invalid_arguments(site: BankSite):
    donor_id = await site.eligible_donor(now().date())
    request = dpb.RecordCollectionRequest(
        donor_id=donor_id,
        reason="apheresis",
        volume_ml=250,
        total_nucleated_cells=1e10,
        nk_cells=-5,
        cd3_cells=0,
    )
    request.collected_at.FromDatetime(now())
    details = await refused(
        site.donors.RecordCollection(request, metadata=auth("op-alice")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith("nk_cells:")
    details = await refused(
        site.donors.ValidateDin(
            dpb.ValidateDinRequest(din="G123417654321B"), metadata=auth("op-alice")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith("din:") and "check" in details
    details = await refused(
        site.donors.ValidateDin(
            dpb.ValidateDinRequest(din="=G12341765432171"), metadata=auth("op-alice")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith("din:") and "flag 71" in details
