"""The demo flow a bank runs, over gRPC: used by `make run` to seed data and by the e2e tests."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import grpc
from cellbank.donor.v1 import donor_service_pb2 as dpb
from cellbank.donor.v1 import donor_service_pb2_grpc as dpb_grpc
from cellbank.manufacturing.v1 import manufacturing_service_pb2 as mpb
from cellbank.manufacturing.v1 import manufacturing_service_pb2_grpc as mpb_grpc
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.operator.v1 import operator_service_pb2_grpc as opb_grpc
from cellbank.storage.v1 import storage_service_pb2 as spb
from cellbank.storage.v1 import storage_service_pb2_grpc as spb_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from deploy import identities
from deploy.demo_population import DonorProfile
from services.donor_intake.domain.eligibility import DEFAULT_MARKERS
from shared.waits import eventually

HLA = {
    "A": ["A*02:01", "A*24:02"],
    "B": ["B*07:02", "B*44:02"],
    "C": ["C*07:02", "C*05:01"],
    "DRB1": ["DRB1*15:01", "DRB1*04:01"],
    "DQB1": ["DQB1*06:02", "DQB1*03:02"],
}
DEMO_KIR = ("KIR2DL1", "KIR2DL3", "KIR3DL1", "KIR2DS4")
PASSING_QC: list[tuple[str, float | None, str]] = [
    ("viability", 92.0, ""),
    ("purity_cd56_cd3neg", 95.0, ""),
    ("cd3_content", 1.2e5, ""),
    ("endotoxin", 0.5, ""),
    ("mycoplasma_pcr", None, "negative"),
    ("gram_stain", None, "no organisms"),
    ("preliminary_culture", None, "no growth"),
    ("potency_k562_lysis", 45.0, ""),
    ("identity_hla_ab", None, "confirmed"),
]


def auth(who: str) -> identities.Caller:
    """Call metadata with the access token of a demo person or client (deploy/identities.py:
    "op-alice", "qa-quinn", "hosp-h1", "clin-h1", a username or a client id)."""
    return identities.Caller(who)


def ts(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def random_fin() -> str:
    """A fresh ISBT 128 facility id, so DINs of different tests never collide on the topics."""
    first = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    middle = first + "0123456789"
    return (
        random.choice(first) + "".join(random.choices(middle, k=2)) + f"{random.randrange(100):02d}"
    )


@dataclass
class BankClient:
    """gRPC clients of one site's donor_intake and manufacturing, and the steps of the flow."""

    donors: dpb_grpc.DonorIntakeServiceStub
    manufacturing: mpb_grpc.ManufacturingServiceStub
    donor_ops: opb_grpc.OperatorServiceStub
    manufacturing_ops: opb_grpc.OperatorServiceStub

    @classmethod
    def over(
        cls, donor_channel: grpc.aio.Channel, manufacturing_channel: grpc.aio.Channel
    ) -> BankClient:
        return cls(
            dpb_grpc.DonorIntakeServiceStub(donor_channel),
            mpb_grpc.ManufacturingServiceStub(manufacturing_channel),
            opb_grpc.OperatorServiceStub(donor_channel),
            opb_grpc.OperatorServiceStub(manufacturing_channel),
        )

    async def event_counts(self) -> tuple[int, int]:
        request = opb.GetStoreStatusRequest()
        d = await self.donor_ops.GetStoreStatus(request, metadata=auth("op-alice"))
        m = await self.manufacturing_ops.GetStoreStatus(request, metadata=auth("op-alice"))
        return d.event_count, m.event_count

    async def eligible_donor(
        self,
        today: date,
        hla: Mapping[str, Sequence[str]] | None = None,
        kir: Sequence[str] = DEMO_KIR,
        profile: DonorProfile | None = None,
    ) -> str:
        """Register → consent → screen → questionnaire → type → ELIGIBLE; the donor id.
        `hla` replaces loci of the demo typing (e.g. {"C": ["C*05:01", "C*04:01"]}); a
        `profile` (deploy/demo_population.py) replaces the whole typing, ABO/Rh and CMV."""
        op = auth("op-alice")
        typing: Mapping[str, Sequence[str]] = {**HLA, **(hla or {})}
        abo, rh, cmv = "O", "POS", "POSITIVE"
        if profile is not None:
            typing, kir = profile.hla, profile.kir
            abo, rh, cmv = profile.abo, profile.rh, profile.cmv
        donor = await self.donors.RegisterDonor(
            dpb.RegisterDonorRequest(
                donor_ref=f"DR-{uuid.uuid4().hex[:10]}", reason="walk-in donor"
            ),
            metadata=op,
        )
        donor_id = donor.donor_id
        await self.donors.GiveConsent(
            dpb.GiveConsentRequest(
                donor_id=donor_id, reason="signed", consent_form="NK-CONSENT-v3"
            ),
            metadata=op,
        )
        specimen = (today - timedelta(days=2)).isoformat()
        for marker in (*DEFAULT_MARKERS, "CMV"):
            result = cmv if marker == "CMV" else "NEGATIVE"  # CMV is an attribute only
            await self.donors.RecordScreeningResult(
                dpb.RecordScreeningResultRequest(
                    donor_id=donor_id,
                    reason="lab result",
                    marker=marker,
                    result=result,
                    specimen_date=specimen,
                ),
                metadata=op,
            )
        await self.donors.RecordQuestionnaire(
            dpb.RecordQuestionnaireRequest(donor_id=donor_id, reason="interview", passed=True),
            metadata=op,
        )
        await self.donors.RecordTyping(
            dpb.RecordTypingRequest(
                donor_id=donor_id,
                reason="typing lab",
                hla=[dpb.HlaLocus(locus=k, alleles=v) for k, v in typing.items()],
                kir_genes=list(kir),
                abo=abo,
                rh=rh,
                cmv=cmv,
            ),
            metadata=op,
        )
        reply = await self.donors.DetermineEligibility(
            dpb.DetermineEligibilityRequest(
                donor_id=donor_id, reason="pre-collection", as_of=today.isoformat()
            ),
            metadata=op,
        )
        assert reply.eligibility == "ELIGIBLE", list(reply.eligibility_reasons)
        return donor_id

    async def collect(self, donor_id: str, at: datetime) -> dpb.CollectionReply:
        return await self.donors.RecordCollection(
            dpb.RecordCollectionRequest(
                donor_id=donor_id,
                reason="apheresis",
                collected_at=ts(at),
                volume_ml=250,
                total_nucleated_cells=1.5e10,
                nk_cells=1.5e9,
                cd3_cells=4e9,
            ),
            metadata=auth("op-alice"),
        )

    async def start_batch(self, din: str) -> str:
        """Start a batch once manufacturing has seen the collection (via Kafka)."""

        async def attempt() -> str:
            try:
                reply = await self.manufacturing.StartBatch(
                    mpb.StartBatchRequest(din=din, product_type="NK-ALLO", reason="manufacture"),
                    metadata=auth("op-alice"),
                )
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    return ""
                raise
            return reply.batch_id

        return await eventually(attempt, what=f"manufacturing to know collection {din}", timeout=60)

    async def process(self, batch_id: str, at: datetime) -> None:
        op = auth("op-alice")
        steps = [("CD3_DEPLETION", 0), ("CD56_ENRICHMENT", 0)]
        steps += [("EXPANSION_DAY", d) for d in (1, 7, 14)]
        steps += [("HARVEST", 0), ("FORMULATION", 0), ("CRYOPRESERVATION", 0)]
        for step, day in steps:
            await self.manufacturing.RecordProcessStep(
                mpb.RecordProcessStepRequest(
                    batch_id=batch_id, reason="batch record", step=step, day=day,
                    performed_at=ts(at), viable_cells=2e9, viability_pct=93,
                ),
                metadata=op,
            )  # fmt: skip

    async def qc(
        self, batch_id: str, at: datetime, results: list[tuple[str, float | None, str]]
    ) -> None:
        for test, value, text in results:
            request = mpb.RecordQcResultRequest(
                batch_id=batch_id, reason="QC lab", test=test, text=text, tested_at=ts(at)
            )
            if value is not None:
                request.value = value
            await self.manufacturing.RecordQcResult(request, metadata=auth("op-bob"))

    async def release(self, batch_id: str, token: str = "qa-quinn") -> mpb.ReleaseBatchReply:
        return await self.manufacturing.ReleaseBatch(
            mpb.ReleaseBatchRequest(
                batch_id=batch_id,
                reason="batch record reviewed",
                signature_meaning="Released for clinical use",
                units=[mpb.UnitSpec(viable_nk_cells=5e8, cd3_cells=2e5, volume_ml=20)] * 2,
            ),
            metadata=auth(token),
        )


def now() -> datetime:
    return datetime.now(UTC)


async def released_batch(
    client: BankClient, donor: DonorProfile | None = None
) -> mpb.ReleaseBatchReply:
    """The whole flow once: an eligible donor (typed as `donor`, else the fixed demo typing), a
    collection, a batch, QC, a QA release."""
    donor_id = await client.eligible_donor(now().date(), profile=donor)
    din = (await client.collect(donor_id, now())).din
    batch_id = await client.start_batch(din)
    await client.process(batch_id, now())
    await client.qc(batch_id, now(), PASSING_QC)
    return await client.release(batch_id)


DEMO_TANK_LAYOUT = (2, 2, 10)  # racks, boxes per rack, positions per box
DEMO_SEGREGATED_BOX = "R2/B2"
IN_POSITION = frozenset({"STORED", "QUARANTINED"})  # statuses that hold a tank position


async def register_demo_tank(storage: spb_grpc.StorageServiceStub, tank_id: str) -> None:
    """A small tank with one segregated box (for urgent-need units); already there is fine."""
    racks, boxes, positions = DEMO_TANK_LAYOUT
    request = spb.RegisterTankRequest(
        tank_id=tank_id, racks=racks, boxes_per_rack=boxes, positions_per_box=positions,
        segregated_boxes=[DEMO_SEGREGATED_BOX], reason="demo tank commissioned",
    )  # fmt: skip
    try:
        await storage.RegisterTank(request, metadata=auth("op-alice"))
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.FAILED_PRECONDITION:  # registered by an earlier run
            raise


async def store_when_known(
    storage: spb_grpc.StorageServiceStub, unit_id: str, address: str
) -> None:
    """Store a unit once storage has heard of its release (through Kafka)."""

    async def attempt() -> bool:
        try:
            await storage.StoreUnit(
                spb.StoreUnitRequest(unit_id=unit_id, address=address, reason="into LN2"),
                metadata=auth("op-alice"),
            )
        except grpc.aio.AioRpcError as err:
            if "only RELEASED units" in (err.details() or ""):
                return False
            raise
        return True

    await eventually(attempt, what=f"storage to know unit {unit_id}", timeout=60)


async def tank_stock(storage: spb_grpc.StorageServiceStub, tank_id: str) -> list[spb.InventoryUnit]:
    """Every unit the site's inventory places in the tank (any status)."""
    reply = await storage.ListInventory(
        spb.ListInventoryRequest(tank_id=tank_id), metadata=auth("op-alice")
    )
    return list(reply.units)


def available_units(stock: Sequence[spb.InventoryUnit], now: datetime) -> list[str]:
    """The units of `stock` an order could take now, by the system's rule: stored, not
    reserved or its hold lapsed, and not expired (usable to its day's end)."""
    return [
        u.unit_id for u in stock
        if u.status == "STORED"
        and (not u.reserved_for or u.hold_until.ToDatetime(tzinfo=UTC) <= now)
        and date.fromisoformat(u.expires_on) >= now.date()
    ]  # fmt: skip


def free_demo_positions(tank_id: str, stock: Sequence[spb.InventoryUnit]) -> list[str]:
    """The demo tank's ordinary (not segregated) positions no unit of `stock` holds, in order."""
    racks, boxes, positions = DEMO_TANK_LAYOUT
    held = {u.address for u in stock if u.status in IN_POSITION}
    return [
        address
        for r in range(1, racks + 1)
        for b in range(1, boxes + 1)
        if f"R{r}/B{b}" != DEMO_SEGREGATED_BOX
        for p in range(1, positions + 1)
        if (address := f"{tank_id}/R{r}/B{b}/P{p:02d}") not in held
    ]


async def store_in_free_position(
    storage: spb_grpc.StorageServiceStub, unit_id: str, free: list[str]
) -> str | None:
    """Store the unit in the first of the `free` positions that is still free (taking the
    positions it tries off the list); its address, or None when none is left."""
    while free:
        address = free.pop(0)
        try:
            await store_when_known(storage, unit_id, address)
        except grpc.aio.AioRpcError as err:
            # Filled after the stock was read (the inventory is a projection): try the next.
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION and "position occupied" in (
                err.details() or ""
            ):
                continue
            raise
        return address
    return None
