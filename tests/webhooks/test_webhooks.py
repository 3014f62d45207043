"""Outbound webhooks end to end: endpoints over HTTP, deliveries by the worker to a local receiver that
checks every request with the ``standardwebhooks`` library's own ``Webhook.verify``."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import select, text
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug import Request, Response

from emanet.core import clock as clock_module
from emanet.core.db import Database
from emanet.core.models import Event, Job
from emanet.core.outbox import emit_event
from emanet.core.settings import Settings
from emanet.core.tasks import JobContext
from emanet.core.worker import Worker
from emanet.notifications.models import EventDispatch, Notification
from emanet.notifications.tasks import dispatch_event
from emanet.users.models import Role, User
from emanet.webhooks.models import WebhookDelivery
from tests.conftest import bearer
from tests.factories import Factory
from tests.plans import explain, rows_read_from, statements_sent

SCHEDULE = [1.0] * 8  # retry after ~1 s, 8 times: the receiver verifies timestamps against the wall clock


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"webhook_retry_schedule_seconds": SCHEDULE, "webhook_disable_after_failures": 100}


@pytest.fixture(autouse=True)
def _wall_clock(clock: clock_module.FrozenClock) -> None:
    """``Webhook.verify`` checks ``webhook-timestamp`` against the real time (±5 min); start there."""
    clock.set(datetime.now(UTC))


class Receiver:
    """A platform's webhook handler: verifies, deduplicates on ``webhook-id``, applies each event once."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.down = False
        self.ack_lost_for: set[str] = set()  # event types processed but answered 500 the first time
        self.requests: list[dict[str, Any]] = []
        self.applied: dict[str, list[str]] = defaultdict(list)
        self.seen: set[str] = set()
        self.rejected: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        body = request.get_data(as_text=True)
        headers = dict(request.headers)
        with self._lock:
            self.requests.append({"headers": headers, "body": body})
            if self.down:
                return Response("maintenance", status=503)
            try:
                payloads = [Webhook(secret).verify(body, headers) for secret in self.secrets]
            except WebhookVerificationError as exc:
                self.rejected.append(str(exc))
                return Response("bad signature", status=400)
            event = payloads[0]
            message_id = headers["Webhook-Id"]
            if message_id not in self.seen:  # the documented receiver duty: dedupe on webhook-id
                self.seen.add(message_id)
                self.applied[event["data"]["id"]].append(event["type"])
                if event["type"] in self.ack_lost_for:
                    self.ack_lost_for.discard(event["type"])
                    return Response("crashed after processing", status=500)
            return Response("ok", status=200)

    def ids_received(self) -> list[str]:
        return [r["headers"]["Webhook-Id"] for r in self.requests]


def _worker(database: Database, settings: Settings, **overrides: Any) -> Any:
    """``run_jobs`` with other worker settings (the worker's settings are what delivery jobs obey)."""
    return Worker(database, settings.model_copy(update=overrides), concurrency=4).run_until_idle


async def _endpoint(client: httpx.AsyncClient, owner: User, url: str, types: list[str]) -> dict[str, Any]:
    created = await client.post(
        "/api/v1/webhook-endpoints",
        headers=bearer(owner),
        json={"url": url, "event_types": types, "description": "platform"},
    )
    assert created.status_code == 201, created.text
    return dict(created.json())


async def _emit(database: Database, event_type: str, object_id: str, **data: Any) -> str:
    async with database.transaction() as session:
        event = await emit_event(
            session, event_type, object_id, {"id": object_id, "object": "escrow", **data}
        )
        return event.public_id


async def _deliver_everything(
    run_jobs: Any, clock: clock_module.FrozenClock, database: Database, max_rounds: int = 30
) -> None:
    """Run jobs, moving the clock past each retry, until no job is left pending."""
    for _ in range(max_rounds):
        await run_jobs()
        async with database.transaction() as session:
            waiting = (await session.execute(select(Job.id).where(Job.status == "pending"))).first()
        if waiting is None:
            return
        clock.advance(seconds=1.2)
    raise AssertionError("deliveries did not settle")


async def test_endpoints_are_created_listed_updated_and_deleted_by_their_owner(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner, stranger = await factory.user(), await factory.user()
    created = await _endpoint(client, owner, "https://platform.example/hooks", ["escrow.*", "payment.failed"])
    assert created["secret"].startswith("whsec_")
    assert created["event_types"] == ["escrow.*", "payment.failed"]
    assert created["status"] == "enabled"
    endpoint_id = created["id"]

    fetched = await client.get(f"/api/v1/webhook-endpoints/{endpoint_id}", headers=bearer(owner))
    assert fetched.status_code == 200
    assert "secret" not in fetched.json()  # shown once, at creation
    listed = await client.get("/api/v1/webhook-endpoints", headers=bearer(owner))
    assert [e["id"] for e in listed.json()["data"]] == [endpoint_id]
    assert (await client.get("/api/v1/webhook-endpoints", headers=bearer(stranger))).json()["data"] == []
    assert (
        await client.get(f"/api/v1/webhook-endpoints/{endpoint_id}", headers=bearer(stranger))
    ).status_code == 404

    bad = await client.post(
        "/api/v1/webhook-endpoints",
        headers=bearer(owner),
        json={"url": "https://x.example", "event_types": ["Escrow Funded"]},
    )
    assert bad.status_code == 422
    not_url = await client.post(
        "/api/v1/webhook-endpoints",
        headers=bearer(owner),
        json={"url": "ftp://x.example", "event_types": ["*"]},
    )
    assert not_url.status_code == 422

    updated = await client.patch(
        f"/api/v1/webhook-endpoints/{endpoint_id}",
        headers=bearer(owner),
        json={"event_types": ["escrow.funded"], "enabled": False},
    )
    assert (updated.json()["event_types"], updated.json()["status"]) == (["escrow.funded"], "disabled")
    deleted = await client.delete(f"/api/v1/webhook-endpoints/{endpoint_id}", headers=bearer(owner))
    assert deleted.status_code == 200
    assert (
        await client.get(f"/api/v1/webhook-endpoints/{endpoint_id}", headers=bearer(owner))
    ).status_code == 404


async def test_a_receiver_that_was_down_gets_every_event_in_order_per_object_once(
    client: httpx.AsyncClient,
    factory: Factory,
    database: Database,
    httpserver: HTTPServer,
    run_jobs: Any,
    clock: clock_module.FrozenClock,
) -> None:
    seller, buyer = await factory.user(), await factory.user()
    endpoint = await _endpoint(client, seller, httpserver.url_for("/hooks"), ["escrow.*"])
    receiver = Receiver([endpoint["secret"]])
    httpserver.expect_request("/hooks", method="POST").respond_with_handler(receiver)
    parties = {"buyer_id": buyer.id, "seller_id": seller.id}
    emitted: dict[str, list[str]] = {"esc_a": [], "esc_b": []}
    ids = []
    for object_id, event_type in [
        ("esc_a", "escrow.created"),
        ("esc_b", "escrow.created"),
        ("esc_a", "escrow.funded"),
        ("esc_a", "escrow.delivered"),
        ("esc_b", "escrow.funded"),
        ("esc_a", "escrow.released"),
    ]:
        ids.append(await _emit(database, event_type, object_id, status=event_type.split(".")[1], **parties))
        emitted[object_id].append(event_type)

    receiver.down = True
    await run_jobs()  # dispatch, then one failed attempt for the head of each object's line
    clock.advance(seconds=1.2)
    await run_jobs()  # the retries fail too
    assert receiver.applied == {}
    down_requests = len(receiver.requests)
    assert down_requests == 4  # only esc_a's and esc_b's first events were tried (twice each); the rest wait
    async with database.transaction() as session:
        statuses = sorted((await session.execute(select(WebhookDelivery.status))).scalars().all())
    assert statuses == ["blocked"] * 4 + ["pending"] * 2

    receiver.down = False
    receiver.ack_lost_for = {"escrow.delivered"}  # processed, but the 200 never made it back
    await _deliver_everything(run_jobs, clock, database)

    assert receiver.rejected == []
    assert dict(receiver.applied) == emitted  # every event, each applied once, in order per object
    received = receiver.ids_received()
    assert set(received) == set(ids)
    assert len(received) - down_requests == len(ids) + 1  # one duplicate: the lost acknowledgement's retry
    async with database.transaction() as session:
        deliveries = (await session.execute(select(WebhookDelivery))).scalars().all()
    assert {d.status for d in deliveries} == {"succeeded"}

    log = await client.get(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries",
        headers=bearer(seller),
        params={"limit": 200},
    )
    assert log.status_code == 200, log.text
    by_event = {d["event_id"]: d for d in log.json()["data"]}
    first = by_event[ids[0]]
    assert [a["status_code"] for a in first["attempt_log"]] == [503, 503, 200]
    assert all(isinstance(a["duration_ms"], int) for a in first["attempt_log"])
    assert first["attempt_log"][0]["error"] == "HTTP 503"
    assert [a["status_code"] for a in by_event[ids[3]]["attempt_log"]] == [500, 200]


async def test_events_dispatched_out_of_order_are_still_delivered_in_order(
    client: httpx.AsyncClient,
    factory: Factory,
    database: Database,
    httpserver: HTTPServer,
    run_jobs: Any,
    settings: Settings,
) -> None:
    seller = await factory.user()
    endpoint = await _endpoint(client, seller, httpserver.url_for("/hooks"), ["escrow.*"])
    receiver = Receiver([endpoint["secret"]])
    httpserver.expect_request("/hooks").respond_with_handler(receiver)
    await _emit(database, "escrow.created", "esc_ooo", seller_id=seller.id)
    await _emit(database, "escrow.funded", "esc_ooo", seller_id=seller.id)
    async with database.transaction() as session:
        later = (await session.execute(select(Event.id).where(Event.type == "escrow.funded"))).scalar_one()
    # The second event's dispatch job happens to run first (another worker took it).
    await dispatch_event(JobContext(database=database, settings=settings, payload={"event_id": later}))
    async with database.transaction() as session:
        rows = (
            (await session.execute(select(WebhookDelivery).order_by(WebhookDelivery.event_id)))
            .scalars()
            .all()
        )
    assert [(d.event_type, d.status) for d in rows] == [
        ("escrow.created", "pending"),
        ("escrow.funded", "blocked"),
    ]
    await run_jobs()
    assert dict(receiver.applied) == {"esc_ooo": ["escrow.created", "escrow.funded"]}
    assert len(receiver.requests) == 2  # the first event's own dispatch job found it done already


async def test_a_batch_of_dispatch_jobs_fans_out_each_object_in_order_and_nothing_unnamed(
    client: httpx.AsyncClient, factory: Factory, database: Database, settings: Settings
) -> None:
    seller = await factory.user()
    await _endpoint(client, seller, "https://hooks.example.com/in", ["escrow.*"])
    for event_type, object_id in [
        ("escrow.created", "esc_a"),
        ("escrow.created", "esc_b"),
        ("escrow.funded", "esc_b"),
        ("escrow.funded", "esc_a"),
    ]:
        await _emit(database, event_type, object_id, seller_id=seller.id)
    async with database.transaction() as session:
        ids = {
            (row.object_id, row.type): row.id
            for row in await session.execute(select(Event.id, Event.object_id, Event.type))
        }
    # One batch names esc_a's second event (its first is still waiting) and esc_b's first: esc_b's second
    # is older than esc_a's second but newer than anything the batch names for esc_b, so its own job will
    # fan it out.
    named = [ids["esc_a", "escrow.funded"], ids["esc_b", "escrow.created"]]
    await dispatch_event(
        JobContext(
            database=database,
            settings=settings,
            payload={"event_id": named[0], "object_id": "esc_a"},
            payloads=[
                {"event_id": named[0], "object_id": "esc_a"},
                {"event_id": named[1]},  # queued before jobs carried the object id
            ],
        )
    )
    async with database.transaction() as session:
        in_event_order = select(WebhookDelivery).order_by(WebhookDelivery.event_id)
        deliveries = [(d.object_id, d.event_type, d.status) for d in (await session.scalars(in_event_order))]
        dispatched = set((await session.execute(select(EventDispatch.event_id))).scalars())
        notified = sorted(
            (n.data["id"], n.kind)
            for n in (await session.execute(select(Notification).where(Notification.user_id == seller.id)))
            .scalars()
            .all()
        )
    assert deliveries == [
        ("esc_a", "escrow.created", "pending"),
        ("esc_b", "escrow.created", "pending"),
        ("esc_a", "escrow.funded", "blocked"),
    ]
    expected = [("esc_a", "escrow.created"), ("esc_a", "escrow.funded"), ("esc_b", "escrow.created")]
    assert dispatched == {ids[key] for key in expected}
    assert notified == [("esc_a", "escrow.created"), ("esc_a", "escrow.funded"), ("esc_b", "escrow.created")]


async def test_payload_is_the_full_object_and_headers_follow_standard_webhooks(
    client: httpx.AsyncClient, factory: Factory, database: Database, httpserver: HTTPServer, run_jobs: Any
) -> None:
    seller = await factory.user()
    endpoint = await _endpoint(client, seller, httpserver.url_for("/hooks"), ["escrow.funded"])
    receiver = Receiver([endpoint["secret"]])
    httpserver.expect_request("/hooks").respond_with_handler(receiver)
    public_id = await _emit(
        database,
        "escrow.funded",
        "esc_full",
        seller_id=seller.id,
        buyer_id="usr_other",
        amount=12550,
        currency="TRY",
        title="Bike",
        status="funded",
    )
    await _emit(database, "escrow.created", "esc_full", seller_id=seller.id)  # not subscribed
    await run_jobs()
    [request] = receiver.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["webhook-id"] == public_id
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json"
    body = Webhook(endpoint["secret"]).verify(request["body"], request["headers"])
    assert body["id"] == public_id and body["type"] == "escrow.funded"
    assert body["data"] == {
        "id": "esc_full",
        "object": "escrow",
        "seller_id": seller.id,
        "buyer_id": "usr_other",
        "amount": 12550,
        "currency": "TRY",
        "title": "Bike",
        "status": "funded",
    }


async def test_endpoints_only_see_their_owners_objects_and_admins_see_all(
    client: httpx.AsyncClient, factory: Factory, database: Database, httpserver: HTTPServer, run_jobs: Any
) -> None:
    seller, stranger, admin = await factory.user(), await factory.user(), await factory.user(role=Role.admin)
    receivers = {}
    for name, owner in (("seller", seller), ("stranger", stranger), ("admin", admin)):
        endpoint = await _endpoint(client, owner, httpserver.url_for(f"/{name}"), ["*"])
        receivers[name] = Receiver([endpoint["secret"]])
        httpserver.expect_request(f"/{name}").respond_with_handler(receivers[name])
    await _emit(database, "escrow.created", "esc_mine", seller_id=seller.id, buyer_id="usr_someone")
    await _emit(database, "payment.failed", "pay_1", escrow={"id": "esc_mine", "seller_id": seller.id})
    await run_jobs()
    assert dict(receivers["seller"].applied) == {"esc_mine": ["escrow.created"], "pay_1": ["payment.failed"]}
    assert dict(receivers["admin"].applied) == dict(receivers["seller"].applied)
    assert receivers["stranger"].requests == []


OTHER_ENDPOINTS = 2_000


@pytest.mark.postgres_only
async def test_a_fan_out_reads_only_the_endpoints_of_the_events_parties_and_of_admins(
    client: httpx.AsyncClient, factory: Factory, database: Database, httpserver: HTTPServer, run_jobs: Any
) -> None:
    seller, admin = await factory.user(), await factory.user(role=Role.admin)
    receivers = {}
    for name, owner in (("seller", seller), ("admin", admin)):
        endpoint = await _endpoint(client, owner, httpserver.url_for(f"/{name}"), ["*"])
        receivers[name] = Receiver([endpoint["secret"]])
        httpserver.expect_request(f"/{name}").respond_with_handler(receivers[name])
    async with database.transaction() as session:  # other sellers' endpoints, subscribed to everything
        await session.execute(
            text(
                "INSERT INTO users (id, email, name, role, status, verification_level, locale,"
                " created_at, updated_at) SELECT 'usr_other' || n, 'other' || n || '@example.com', 'Other',"
                " 'user', 'active', 'none', 'en', now(), now() FROM generate_series(1, :count) AS n"
            ),
            {"count": OTHER_ENDPOINTS},
        )
        await session.execute(
            text(
                "INSERT INTO webhook_endpoints (id, owner_id, url, description, event_types,"
                " secret_encrypted, status, consecutive_failures, created_at, updated_at)"
                " SELECT 'whe_other' || n, 'usr_other' || n, 'https://other.example/hook', '',"
                " CAST('[\"*\"]' AS json), 'unused', 'enabled', 0, now(), now()"
                " FROM generate_series(1, :count) AS n"
            ),
            {"count": OTHER_ENDPOINTS},
        )
        await session.execute(text("ANALYZE users, webhook_endpoints"))
    with statements_sent(database, "SELECT webhook_endpoints.id") as sent:
        await _emit(database, "escrow.created", "esc_mine", seller_id=seller.id, buyer_id="usr_someone")
        await run_jobs()
    assert (
        dict(receivers["seller"].applied)
        == dict(receivers["admin"].applied)
        == {"esc_mine": ["escrow.created"]}
    )
    [(statement, parameters)] = [(s, p) for s, p in sent if "users.role" in s]  # the candidates
    plan = await explain(database, statement, parameters)
    assert rows_read_from(plan, "webhook_endpoints") <= 4, plan  # the seller's and the admin's, not 2,002


async def test_a_rotated_secret_signs_alongside_the_old_one_for_the_overlap(
    client: httpx.AsyncClient,
    factory: Factory,
    database: Database,
    httpserver: HTTPServer,
    run_jobs: Any,
    clock: clock_module.FrozenClock,
) -> None:
    owner = await factory.user()
    endpoint = await _endpoint(client, owner, httpserver.url_for("/hooks"), ["*"])
    rotated = await client.post(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=bearer(owner)
    )
    assert rotated.status_code == 200, rotated.text
    new_secret, old_secret = rotated.json()["secret"], endpoint["secret"]
    assert new_secret != old_secret and rotated.json()["previous_secret_expires_at"]
    receiver = Receiver([old_secret, new_secret])  # a receiver on either secret accepts the delivery
    httpserver.expect_request("/hooks").respond_with_handler(receiver)
    await _emit(database, "escrow.created", "esc_rot", seller_id=owner.id)
    await run_jobs()
    assert receiver.rejected == [] and len(receiver.requests) == 1
    assert len(receiver.requests[0]["headers"]["Webhook-Signature"].split(" ")) == 2

    clock.advance(hours=24, seconds=1)
    await _emit(database, "escrow.funded", "esc_rot", seller_id=owner.id)
    await run_jobs()
    late = receiver.requests[-1]
    signatures = late["headers"]["Webhook-Signature"].split(" ")
    sent_at = datetime.fromtimestamp(int(late["headers"]["Webhook-Timestamp"]), UTC)
    assert signatures == [Webhook(new_secret).sign(late["headers"]["Webhook-Id"], sent_at, late["body"])]


async def test_an_endpoint_failing_repeatedly_is_disabled_its_owner_notified_and_reenabling_resumes(
    client: httpx.AsyncClient,
    factory: Factory,
    database: Database,
    httpserver: HTTPServer,
    run_jobs: Any,
    clock: clock_module.FrozenClock,
    settings: Settings,
) -> None:
    run_jobs = _worker(database, settings, webhook_disable_after_failures=3)
    owner = await factory.user()
    endpoint = await _endpoint(client, owner, httpserver.url_for("/hooks"), ["escrow.*"])
    receiver = Receiver([endpoint["secret"]])
    receiver.down = True
    httpserver.expect_request("/hooks").respond_with_handler(receiver)
    await _emit(database, "escrow.created", "esc_dis", seller_id=owner.id)
    await _deliver_everything(run_jobs, clock, database)
    assert len(receiver.requests) == 3
    state = (await client.get(f"/api/v1/webhook-endpoints/{endpoint['id']}", headers=bearer(owner))).json()
    assert (state["status"], state["consecutive_failures"]) == ("disabled", 3)
    assert "3 consecutive failed deliveries" in state["disabled_reason"]
    inbox = (await client.get("/api/v1/notifications", headers=bearer(owner))).json()["data"]
    disabled_notices = [n for n in inbox if n["kind"] == "webhook_endpoint.disabled"]
    assert len(disabled_notices) == 1 and endpoint["id"] in str(disabled_notices[0]["data"])

    redeliver_while_disabled = await client.post(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries/whd_x/redeliver", headers=bearer(owner)
    )
    assert redeliver_while_disabled.status_code == 409
    receiver.down = False
    enabled = await client.patch(
        f"/api/v1/webhook-endpoints/{endpoint['id']}", headers=bearer(owner), json={"enabled": True}
    )
    assert (enabled.json()["status"], enabled.json()["consecutive_failures"]) == ("enabled", 0)
    await _deliver_everything(run_jobs, clock, database)
    assert dict(receiver.applied) == {"esc_dis": ["escrow.created"]}


async def test_a_delivery_given_up_lets_the_next_event_through_and_can_be_redelivered_by_hand(
    client: httpx.AsyncClient,
    factory: Factory,
    database: Database,
    httpserver: HTTPServer,
    run_jobs: Any,
    clock: clock_module.FrozenClock,
    settings: Settings,
) -> None:
    run_jobs = _worker(database, settings, webhook_retry_schedule_seconds=[1.0])
    owner = await factory.user()
    endpoint = await _endpoint(client, owner, httpserver.url_for("/hooks"), ["escrow.*"])
    receiver = Receiver([endpoint["secret"]])
    receiver.down = True
    httpserver.expect_request("/hooks").respond_with_handler(receiver)
    first = await _emit(database, "escrow.created", "esc_gu", seller_id=owner.id)
    await _emit(database, "escrow.funded", "esc_gu", seller_id=owner.id)
    await run_jobs()
    clock.advance(seconds=1.2)
    await run_jobs()  # the second and last try of the first event fails: given up, the next one is released
    receiver.down = False
    await _deliver_everything(run_jobs, clock, database)
    assert dict(receiver.applied) == {"esc_gu": ["escrow.funded"]}

    deliveries = (
        await client.get(
            f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries",
            headers=bearer(owner),
            params={"status": "failed"},
        )
    ).json()["data"]
    [failed] = deliveries
    assert (failed["event_id"], failed["attempts"]) == (first, 2)
    redelivered = await client.post(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries/{failed['id']}/redeliver",
        headers=bearer(owner),
    )
    assert redelivered.status_code == 202, redelivered.text
    await run_jobs()
    again = (
        await client.get(
            f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries/{failed['id']}", headers=bearer(owner)
        )
    ).json()
    assert again["status"] == "succeeded"
    assert [(a["trigger"], a["status_code"]) for a in again["attempt_log"]] == [
        ("auto", 503),
        ("auto", 503),
        ("manual", 200),
    ]
    assert receiver.ids_received()[-1] == first  # the same webhook-id as the original attempts


async def test_private_targets_are_refused_when_not_allowed(
    client: httpx.AsyncClient,
    factory: Factory,
    database: Database,
    httpserver: HTTPServer,
    run_jobs: Any,
    settings: Settings,
) -> None:
    run_jobs = _worker(database, settings, webhook_allow_private_targets=False)
    owner = await factory.user()
    endpoint = await _endpoint(client, owner, httpserver.url_for("/hooks"), ["*"])
    await _emit(database, "escrow.created", "esc_ssrf", seller_id=owner.id)
    await run_jobs()
    assert httpserver.log == []
    [delivery] = (
        await client.get(f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=bearer(owner))
    ).json()["data"]
    assert "non-public address" in delivery["attempt_log"][0]["error"]
