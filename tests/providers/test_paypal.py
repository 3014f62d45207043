"""The PayPal adapter against a local fake of PayPal's REST API (tests/fakes/paypal_fake.py); webhooks signed
with the key of a leaf certificate issued by a local test CA (root -> intermediate -> leaf for
``messageverificationcerts.paypal.com``, made with ``cryptography``), its chain served from the fake and the
test root the only CA of ``paypal_cert_ca_bundle``. The fake also serves other files (``PaypalCaFake.files``):
a rotated certificate URL, and issuers at caIssuers locations (DER, as DigiCert's http://cacerts.digicert.com
serves them) for a leaf served alone whose Authority Information Access points there."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug import Request, Response

from emanet.core.clock import FrozenClock
from emanet.core.db import new_id
from emanet.core.settings import Settings
from emanet.payments.models import ProviderEvent
from emanet.providers.base import (
    CreatePayment,
    InvalidWebhookSignature,
    ProviderDeclined,
    ProviderNotConfigured,
    ProviderUnavailable,
)
from emanet.providers.paypal import (
    MAX_ISSUER_FETCHES,
    PaypalProvider,
    ca_issuers_urls,
    from_decimal,
    to_decimal,
)
from emanet.providers.registry import get_provider
from tests.fakes.paypal_fake import PaypalFake
from tests.fakes.server import CLIENT_TIMEOUT_SECONDS, Recorded

CLIENT_ID, SECRET, WEBHOOK_ID = "paypal-client", "paypal-secret", "WH0FAKE0123456789"
PAYPAL_HOST = "messageverificationcerts.paypal.com"
WEBHOOK_PATH = "/api/v1/webhooks/paypal"


# ------------------------------------------------------------------------------------------- test PKI
@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    issuer: Issued | None,
    not_before: datetime,
    not_after: datetime,
    *,
    ca: bool,
    aia: str | None = None,
) -> Issued:
    """A certificate shaped as a Web PKI one: a CA (``ca=True``), self-signed when ``issuer`` is None, or a
    TLS leaf for the host ``subject`` (subjectAltName, serverAuth and clientAuth like PayPal's); with ``aia``,
    an Authority Information Access caIssuers URI as DigiCert's certificates carry."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.certificate.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        ).add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    if aia:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(aia)
                    )
                ]
            ),
            critical=False,
        )
    return Issued(builder.sign(signer_key, hashes.SHA256()), key)


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Pki:
    """A trusted test root, an intermediate it issued, and a leaf for PayPal's host issued by that."""

    root: Issued
    intermediate: Issued
    leaf: Issued
    now: datetime

    @classmethod
    def make(cls, now: datetime, root_name: str = "Emanet Test Root CA") -> Pki:
        root = _certificate(root_name, None, now - timedelta(days=365), now + timedelta(days=3650), ca=True)
        intermediate = _certificate(
            f"{root_name} Intermediate", root, now - timedelta(days=30), now + timedelta(days=1000), ca=True
        )
        leaf = _certificate(
            PAYPAL_HOST, intermediate, now - timedelta(days=1), now + timedelta(days=365), ca=False
        )
        return cls(root, intermediate, leaf, now)

    def leaf_for(
        self, host: str, issuer: Issued | None = None, *, days: int = 365, aia: str | None = None
    ) -> Issued:
        issuer = issuer or self.intermediate
        return _certificate(
            host, issuer, self.now - timedelta(days=1), self.now + timedelta(days=days), ca=False, aia=aia
        )

    def intermediate_under(self, issuer: Issued, name: str, *, aia: str | None = None) -> Issued:
        return _certificate(
            name, issuer, self.now - timedelta(days=30), self.now + timedelta(days=1000), ca=True, aia=aia
        )

    def intermediate_until(self, not_after: datetime) -> Issued:
        return _certificate(
            "Emanet Test Intermediate (short)", self.root, self.now - timedelta(days=400), not_after, ca=True
        )


class PaypalCaFake(PaypalFake):
    """The PayPal fake, also answering the paths of ``files`` with their bytes: more certificate URLs, and
    caIssuers locations. Any other path answers as before (404 when no route has it)."""

    def __init__(self, client_id: str, secret: str) -> None:
        super().__init__(client_id, secret)
        self.files: dict[str, bytes] = {}

    def _route(self, request: Request, recorded: Recorded) -> Response:
        content = self.files.get(request.path)
        if content is None:
            return super()._route(request, recorded)
        kind = "application/x-pem-file" if content.startswith(b"-----BEGIN") else "application/pkix-cert"
        return Response(content, content_type=kind)

    def fetches(self, path: str) -> int:
        """Requests for ``path`` (of the fake's request log, recorded as they arrive)."""
        return sum(1 for request in self.requests if request.path == path)


def serve(fake: PaypalFake, leaf: Issued, *bundle: x509.Certificate) -> None:
    """What the fake's certificate URL answers (the leaf, then ``bundle``), and the key ``fake.sign`` uses."""
    fake.signing_key, fake.certificate_pem = leaf.key, pem(leaf.certificate, *bundle)


def certificate_fetches(fake: PaypalFake) -> int:
    return sum(1 for request, _ in fake.server.log if request.path == "/certs/CERT-fake")


@pytest.fixture
def pki(clock: FrozenClock) -> Pki:
    return Pki.make(clock.now())


@pytest.fixture
def ca_bundle(tmp_path: Path, pki: Pki) -> Path:
    path = tmp_path / "paypal-roots.pem"
    path.write_bytes(pem(pki.root.certificate))
    return path


@pytest.fixture
def fake(pki: Pki) -> Iterator[PaypalCaFake]:
    server = PaypalCaFake(CLIENT_ID, SECRET)
    serve(server, pki.leaf, pki.intermediate.certificate)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(fake: PaypalFake, ca_bundle: Path) -> dict[str, Any]:
    return {
        "paypal_client_id": CLIENT_ID,
        "paypal_client_secret": SECRET,
        "paypal_webhook_id": WEBHOOK_ID,
        "paypal_api_base": fake.url,
        "paypal_cert_url_prefixes": [f"{fake.url}/certs/"],
        "paypal_cert_ca_bundle": str(ca_bundle),
        "paypal_cert_issuer_url_prefixes": [f"{fake.url}/issuers/"],
        "provider_timeout_seconds": CLIENT_TIMEOUT_SECONDS,
        "provider_retry_initial_seconds": 0.01,
        "provider_retry_max_seconds": 0.05,
    }


@pytest.fixture
def provider(settings: Settings) -> PaypalProvider:
    adapter = get_provider("paypal", settings)
    assert isinstance(adapter, PaypalProvider)
    return adapter


def request(**fields: Any) -> CreatePayment:
    values: dict[str, Any] = {
        "payment_id": new_id("pay"),
        "amount": 12_345,
        "currency": "USD",
        "description": "Vintage camera",
        "return_url": "https://shop.example/return",
    }
    values.update(fields)
    return CreatePayment(**values)


def test_decimal_conversion() -> None:
    assert to_decimal(12_345, "USD") == "123.45"
    assert to_decimal(5, "USD") == "0.05"
    assert to_decimal(1_200, "JPY") == "1200"
    assert from_decimal("123.45", "USD") == 12_345
    assert from_decimal("1200", "JPY") == 1_200
    with pytest.raises(ProviderDeclined):
        from_decimal("1.005", "USD")


# ------------------------------------------------------------------------------------------- payments
async def test_approve_then_capture_on_return(provider: PaypalProvider, fake: PaypalFake) -> None:
    req = request()
    payment = await provider.create_payment(req)
    assert (payment.status, payment.amount, payment.currency) == ("requires_action", 12_345, "USD")
    assert payment.next_action is not None and payment.next_action.type == "redirect"
    assert payment.next_action.url == f"https://www.sandbox.paypal.com/checkoutnow?token={payment.reference}"
    [post] = fake.calls("POST", "/v2/checkout/orders")
    assert post.headers["Paypal-Request-Id"] == req.payment_id
    unit = post.json()["purchase_units"][0]
    assert (
        unit["amount"] == {"currency_code": "USD", "value": "123.45"} and unit["custom_id"] == req.payment_id
    )
    context = post.json()["payment_source"]["paypal"]["experience_context"]
    assert context["return_url"] == req.return_url

    assert (await provider.get_payment(payment.reference)).status == "requires_action"  # not approved yet
    fake.approve(payment.reference)
    done = await provider.complete_payment(payment.reference, {"token": payment.reference, "PayerID": "P1"})
    assert (done.status, done.amount, done.fee) == ("succeeded", 12_345, 480)  # 3.49 % + 0.49
    again = await provider.get_payment(payment.reference)
    assert again.status == "succeeded"
    assert len(fake.captures) == 1
    [capture] = fake.calls("POST", f"/v2/checkout/orders/{payment.reference}/capture")
    assert capture.headers["Paypal-Request-Id"] == f"{payment.reference}-capture"
    assert fake.tokens_issued == 1  # the access token is reused
    assert provider.methods("USD") == ["paypal", "card"] and provider.methods("TRY") == []


async def test_declined_funding_source_is_a_failed_payment(
    provider: PaypalProvider, fake: PaypalFake
) -> None:
    payment = await provider.create_payment(request())
    fake.approve(payment.reference, declined=True)
    failed = await provider.get_payment(payment.reference)
    assert (failed.status, failed.failure_code) == ("failed", "INSTRUMENT_DECLINED")


async def test_capture_lost_on_the_way_is_replayed_once(provider: PaypalProvider, fake: PaypalFake) -> None:
    payment = await provider.create_payment(request())
    fake.approve(payment.reference)
    fake.fail_next("lost", "503", path="/v2/checkout/orders/.*/capture")
    done = await provider.get_payment(payment.reference)
    assert done.status == "succeeded"
    captures = fake.calls("POST", f"/v2/checkout/orders/{payment.reference}/capture")
    assert len(captures) == 3 and {c.headers["Paypal-Request-Id"] for c in captures} == {
        f"{payment.reference}-capture"
    }
    assert len(fake.captures) == 1


async def test_outage_on_create_is_a_clear_error(provider: PaypalProvider, fake: PaypalFake) -> None:
    fake.fail_next("500", "timeout", "502", path="/v2/checkout/orders")
    req = request()
    with pytest.raises(ProviderUnavailable):
        await provider.create_payment(req)
    posts = fake.calls("POST", "/v2/checkout/orders")
    assert len(posts) == 3 and {p.headers["Paypal-Request-Id"] for p in posts} == {req.payment_id}
    assert fake.orders == {}
    fake.fail_next("503", path="/v2/checkout/orders")
    assert (await provider.create_payment(req)).status == "requires_action"
    assert len(fake.orders) == 1


# ------------------------------------------------------------------------------------------- refunds
async def test_refunds(provider: PaypalProvider, fake: PaypalFake) -> None:
    payment = await provider.create_payment(request(amount=10_000))
    with pytest.raises(ProviderDeclined) as not_captured:
        await provider.refund(payment.reference, 100, "USD", idempotency_key="rf_p1")
    assert not_captured.value.decline_code == "charge_not_refundable"
    fake.approve(payment.reference)
    await provider.get_payment(payment.reference)
    partial = await provider.refund(payment.reference, 2_500, "USD", idempotency_key="rf_p1")
    assert (partial.status, partial.amount) == ("succeeded", 2_500)
    assert (await provider.refund(payment.reference, 2_500, "USD", idempotency_key="rf_p1")).reference == (
        partial.reference
    )
    assert len(fake.refunds) == 1
    assert (await provider.get_payment(payment.reference)).status == "partially_refunded"
    with pytest.raises(ProviderDeclined) as exceeded:
        await provider.refund(payment.reference, 7_501, "USD", idempotency_key="rf_p2")
    assert exceeded.value.decline_code == "REFUND_AMOUNT_EXCEEDED"
    await provider.refund(payment.reference, 7_500, "USD", idempotency_key="rf_p3")
    assert (await provider.get_payment(payment.reference)).status == "refunded"


# ------------------------------------------------------------------------------------------- payouts
async def test_payouts(provider: PaypalProvider, fake: PaypalFake) -> None:
    payout_id = new_id("po")
    fake.fail_next("lost", path="/v1/payments/payouts")
    payout = await provider.create_payout(
        payout_id, 5_000, "USD", {"type": "paypal", "email": "seller@example.com"}
    )
    assert payout.status == "pending"
    posts = fake.calls("POST", "/v1/payments/payouts")
    assert len(posts) == 2 and {p.headers["Paypal-Request-Id"] for p in posts} == {payout_id}
    assert len(fake.batches) == 1
    body = posts[0].json()
    assert body["sender_batch_header"]["sender_batch_id"] == payout_id
    assert body["items"][0]["amount"] == {"value": "50.00", "currency": "USD"}
    fake.settle_batch(payout.reference, "SUCCESS")
    assert (await provider.get_payout(payout.reference)).status == "paid"

    other = await provider.create_payout(new_id("po"), 1_000, "USD", {"email": "nobody@example.com"})
    fake.settle_batch(other.reference, "RETURNED", "The receiver is not registered")
    returned = await provider.get_payout(other.reference)
    assert (returned.status, returned.failure_message) == ("failed", "The receiver is not registered")
    with pytest.raises(ProviderDeclined):
        await provider.create_payout(new_id("po"), 1_000, "USD", {"iban": "DE89"})


async def test_settlements_page_through_transaction_search(
    provider: PaypalProvider,
    fake: PaypalFake,
    clock: FrozenClock,
) -> None:
    references = []
    for amount in (10_000, 20_000):
        req = request(amount=amount)
        payment = await provider.create_payment(req)
        fake.approve(payment.reference)
        await provider.get_payment(payment.reference)
        references.append(req.payment_id)
    refund = await provider.refund(payment.reference, 5_000, "USD", idempotency_key="rf_s")
    records = await provider.list_settlements(clock.now().date())
    assert len(fake.calls("GET", "/v1/reporting/transactions")) == 2
    assert sorted((r.kind, r.amount, r.fee, r.merchant_reference) for r in records) == [
        ("payment", 10_000, 398, references[0]),
        ("payment", 20_000, 747, references[1]),
        ("refund", 5_000, 0, None),
    ]
    assert any(r.reference == refund.reference for r in records)


# ------------------------------------------------------------------------------------------- webhooks
def capture_event(event_id: str = "WH-1", event_type: str = "PAYMENT.CAPTURE.COMPLETED") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "event_type": event_type,
            "resource_type": "capture",
            "resource": {
                "id": "CAP1",
                "status": "COMPLETED",
                "amount": {"currency_code": "USD", "value": "123.45"},
                "supplementary_data": {"related_ids": {"order_id": "ORDER1"}},
            },
        }
    ).encode()


async def test_webhooks_verified_with_the_certificate(provider: PaypalProvider, fake: PaypalFake) -> None:
    body = capture_event()
    parsed = await provider.parse_webhook(fake.sign(body, WEBHOOK_ID), body, "173.0.82.126")
    assert (parsed.event_id, parsed.kind, parsed.status, parsed.payment_reference, parsed.amount) == (
        "WH-1",
        "payment",
        "succeeded",
        "ORDER1",
        12_345,
    )

    approved = json.dumps(
        {
            "id": "WH-2",
            "event_type": "CHECKOUT.ORDER.APPROVED",
            "resource": {"id": "ORDER2", "status": "APPROVED"},
        }
    ).encode()
    parsed = await provider.parse_webhook(fake.sign(approved, WEBHOOK_ID), approved)
    assert (parsed.status, parsed.payment_reference) == ("processing", "ORDER2")

    payout = json.dumps(
        {
            "id": "WH-3",
            "event_type": "PAYMENT.PAYOUTS-ITEM.UNCLAIMED",
            "resource": {
                "payout_batch_id": "BATCH1",
                "transaction_status": "UNCLAIMED",
                "payout_item": {"amount": {"currency": "USD", "value": "50.00"}},
            },
        }
    ).encode()
    parsed = await provider.parse_webhook(fake.sign(payout, WEBHOOK_ID), payout)
    assert (parsed.kind, parsed.status, parsed.payout_reference, parsed.amount) == (
        "payout",
        "processing",
        "BATCH1",
        5_000,
    )
    failed = payout.replace(b"UNCLAIMED", b"FAILED")
    assert (await provider.parse_webhook(fake.sign(failed, WEBHOOK_ID), failed)).status == "failed"

    refund = json.dumps(
        {
            "id": "WH-4",
            "event_type": "PAYMENT.CAPTURE.REFUNDED",
            "resource": {
                "id": "REF1",
                "status": "COMPLETED",
                "amount": {"currency_code": "USD", "value": "1.00"},
            },
        }
    ).encode()
    parsed = await provider.parse_webhook(fake.sign(refund, WEBHOOK_ID), refund)
    assert (parsed.kind, parsed.status, parsed.refund_reference, parsed.amount) == (
        "refund",
        "succeeded",
        "REF1",
        100,
    )

    other = json.dumps({"id": "WH-5", "event_type": "CUSTOMER.DISPUTE.CREATED", "resource": {}}).encode()
    assert (await provider.parse_webhook(fake.sign(other, WEBHOOK_ID), other)).kind == "other"


async def test_webhook_rejections(
    provider: PaypalProvider,
    fake: PaypalFake,
    clock: FrozenClock,
    settings: Settings,
) -> None:
    body = capture_event()
    headers = fake.sign(body, WEBHOOK_ID)
    with pytest.raises(InvalidWebhookSignature):  # tampered body (the CRC changes)
        await provider.parse_webhook(headers, body.replace(b"123.45", b"923.45"))
    with pytest.raises(InvalidWebhookSignature):  # signed for another webhook id
        await provider.parse_webhook(fake.sign(body, "WH0OTHER"), body)
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidWebhookSignature):  # signed with a key that is not the certificate's
        await provider.parse_webhook(fake.sign(body, WEBHOOK_ID, key=impostor), body)
    with pytest.raises(InvalidWebhookSignature):  # certificate from somewhere else
        await provider.parse_webhook(
            fake.sign(body, WEBHOOK_ID, cert_url="https://evil.example/certs/x"), body
        )
    with pytest.raises(InvalidWebhookSignature):  # look-alike host
        await provider.parse_webhook(
            fake.sign(body, WEBHOOK_ID, cert_url=f"{fake.url}/certsX/CERT-fake"), body
        )
    with pytest.raises(InvalidWebhookSignature):  # other algorithm
        await provider.parse_webhook({**headers, "PAYPAL-AUTH-ALGO": "SHA1withRSA"}, body)
    with pytest.raises(InvalidWebhookSignature):  # missing headers
        await provider.parse_webhook({"PAYPAL-TRANSMISSION-ID": "x"}, body)
    stale = fake.sign(body, WEBHOOK_ID, transmission_time=clock.now() - timedelta(minutes=6))
    with pytest.raises(InvalidWebhookSignature):  # outside the 5-minute window
        await provider.parse_webhook(stale, body)
    clock.advance(days=400)  # the certificate has expired
    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook(fake.sign(body, WEBHOOK_ID), body)
    default_prefixes = PaypalProvider(
        settings.model_copy(update={"paypal_cert_url_prefixes": Settings().paypal_cert_url_prefixes})
    )
    with pytest.raises(InvalidWebhookSignature):  # by default only PayPal's own hosts over HTTPS
        await default_prefixes.parse_webhook(fake.sign(body, WEBHOOK_ID), body)


# ------------------------------------------------------------------------------ webhook certificate chain
async def provider_events(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(ProviderEvent))).scalar_one()


async def test_a_certificate_chaining_to_the_trusted_root_is_accepted_once_verified(
    client: httpx.AsyncClient, fake: PaypalFake, session: AsyncSession
) -> None:
    body = capture_event("WH-CHAIN-1")
    response = await client.post(WEBHOOK_PATH, content=body, headers=fake.sign(body, WEBHOOK_ID))
    assert response.status_code == 200, response.text
    stored = (await session.execute(select(ProviderEvent))).scalar_one()
    assert (stored.provider, stored.event_id, stored.type) == (
        "paypal",
        "WH-CHAIN-1",
        "PAYMENT.CAPTURE.COMPLETED",
    )
    await session.rollback()  # on SQLite an open transaction holds the write lock the next webhook needs

    tampered = body.replace(b"123.45", b"923.45")  # the chain is fine, the CRC-32 of the body is not
    response = await client.post(WEBHOOK_PATH, content=tampered, headers=fake.sign(body, WEBHOOK_ID))
    assert response.status_code == 400 and response.json()["code"] == "invalid_webhook_signature"
    assert "does not verify" in response.json()["detail"]

    other = capture_event("WH-CHAIN-2")
    assert (
        await client.post(WEBHOOK_PATH, content=other, headers=fake.sign(other, WEBHOOK_ID))
    ).status_code == 200
    assert await provider_events(session) == 2
    assert certificate_fetches(fake) == 1  # the chain was fetched and verified once for its URL


def _self_signed(pki: Pki) -> tuple[Issued, list[x509.Certificate]]:
    return _certificate(
        PAYPAL_HOST, None, pki.now - timedelta(days=1), pki.now + timedelta(days=365), ca=False
    ), []


def _untrusted_root(pki: Pki) -> tuple[Issued, list[x509.Certificate]]:
    rogue = Pki.make(pki.now, root_name="Rogue Root CA")  # same shape, a root that is not in the bundle
    return rogue.leaf, [rogue.intermediate.certificate, rogue.root.certificate]


def _missing_intermediate(pki: Pki) -> tuple[Issued, list[x509.Certificate]]:
    return pki.leaf, []


def _expired_intermediate(pki: Pki) -> tuple[Issued, list[x509.Certificate]]:
    intermediate = pki.intermediate_until(pki.now - timedelta(days=1))
    return pki.leaf_for(PAYPAL_HOST, intermediate), [intermediate.certificate]


def _other_hostname(pki: Pki) -> tuple[Issued, list[x509.Certificate]]:
    return pki.leaf_for(f"{PAYPAL_HOST}.evil.example"), [pki.intermediate.certificate]


@pytest.mark.parametrize(
    "chain",
    [_self_signed, _untrusted_root, _missing_intermediate, _expired_intermediate, _other_hostname],
    ids=["self-signed", "untrusted-root", "missing-intermediate", "expired-intermediate", "other-hostname"],
)
async def test_an_untrusted_certificate_is_400_and_changes_nothing(
    chain: Any, client: httpx.AsyncClient, fake: PaypalFake, pki: Pki, session: AsyncSession
) -> None:
    leaf, bundle = chain(pki)
    serve(fake, leaf, *bundle)
    body = capture_event()
    # signed with the served leaf's own key: only the certificate's chain or name can make this fail
    for attempt in (1, 2):
        response = await client.post(WEBHOOK_PATH, content=body, headers=fake.sign(body, WEBHOOK_ID))
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_webhook_signature"
        assert "not trusted" in response.json()["detail"]
        assert certificate_fetches(fake) == attempt  # a rejected certificate is not cached
    assert await provider_events(session) == 0
    assert {request.path for request, _ in fake.server.log} == {"/certs/CERT-fake"}  # nothing else fetched


async def test_the_default_trust_store_is_certifi(
    provider: PaypalProvider, fake: PaypalFake, settings: Settings
) -> None:
    default = PaypalProvider(settings.model_copy(update={"paypal_cert_ca_bundle": None}))
    body = capture_event()
    with pytest.raises(InvalidWebhookSignature, match="not trusted"):  # the test root is not a public CA
        await default.parse_webhook(fake.sign(body, WEBHOOK_ID), body)
    assert (await provider.parse_webhook(fake.sign(body, WEBHOOK_ID), body)).event_id == "WH-1"


async def test_a_cached_chain_is_refused_once_an_issuer_expires(
    provider: PaypalProvider, fake: PaypalFake, pki: Pki, clock: FrozenClock
) -> None:
    intermediate = pki.intermediate_until(pki.now + timedelta(days=10))  # expires long before the leaf
    serve(fake, pki.leaf_for(PAYPAL_HOST, intermediate), intermediate.certificate)
    body = capture_event()
    assert (await provider.parse_webhook(fake.sign(body, WEBHOOK_ID), body)).event_id == "WH-1"
    clock.advance(days=9)
    assert (await provider.parse_webhook(fake.sign(body, WEBHOOK_ID), body)).event_id == "WH-1"
    clock.advance(days=2)
    with pytest.raises(InvalidWebhookSignature, match="not valid now"):
        await provider.parse_webhook(fake.sign(body, WEBHOOK_ID), body)
    assert certificate_fetches(fake) == 1


async def test_an_unreadable_trust_store_is_a_configuration_error(
    fake: PaypalFake, settings: Settings, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificates here\n")
    body = capture_event()
    for bundle in (tmp_path / "missing.pem", empty):
        misconfigured = PaypalProvider(settings.model_copy(update={"paypal_cert_ca_bundle": str(bundle)}))
        with pytest.raises(ProviderNotConfigured, match="EMANET_PAYPAL_CERT_CA_BUNDLE"):
            await misconfigured.parse_webhook(fake.sign(body, WEBHOOK_ID), body)
    assert certificate_fetches(fake) == 0  # refused before anything was fetched


# ------------------------------------------------ missing intermediates: Authority Information Access
def issuer_path(kind: str = "issuers") -> str:
    """A fresh path per test: issuers are cached by URL for the process."""
    return f"/{kind}/{uuid.uuid4().hex}.crt"


async def post_webhook(
    client: httpx.AsyncClient, fake: PaypalFake, event_id: str, **sign: Any
) -> httpx.Response:
    body = capture_event(event_id)
    return await client.post(WEBHOOK_PATH, content=body, headers=fake.sign(body, WEBHOOK_ID, **sign))


@pytest.mark.parametrize("encoding", ["der", "pem"])
async def test_a_leaf_served_alone_is_completed_from_its_ca_issuers_url(
    encoding: str, client: httpx.AsyncClient, fake: PaypalCaFake, pki: Pki, session: AsyncSession
) -> None:
    path = issuer_path()
    fake.files[path] = (
        der(pki.intermediate.certificate) if encoding == "der" else pem(pki.intermediate.certificate)
    )
    serve(fake, pki.leaf_for(PAYPAL_HOST, aia=f"{fake.url}{path}"))  # the leaf alone, no intermediate
    response = await post_webhook(client, fake, "WH-AIA-1")
    assert response.status_code == 200, response.text
    assert fake.fetches(path) == 1

    # PayPal rotates to a new certificate URL under the same intermediate: the issuer is not fetched again
    rotated = pki.leaf_for(PAYPAL_HOST, aia=f"{fake.url}{path}")
    fake.files["/certs/CERT-rotated"] = pem(rotated.certificate)
    rotated_url = f"{fake.url}/certs/CERT-rotated"
    response = await post_webhook(client, fake, "WH-AIA-2", key=rotated.key, cert_url=rotated_url)
    assert response.status_code == 200, response.text
    assert (await post_webhook(client, fake, "WH-AIA-3")).status_code == 200
    assert await provider_events(session) == 3
    assert fake.fetches(path) == 1  # fetched once for three webhooks
    assert (certificate_fetches(fake), fake.fetches("/certs/CERT-rotated")) == (1, 1)


async def test_an_issuer_url_outside_the_allowed_prefixes_is_not_fetched(
    client: httpx.AsyncClient,
    fake: PaypalCaFake,
    pki: Pki,
    session: AsyncSession,
    settings: Settings,
) -> None:
    elsewhere = issuer_path("elsewhere")  # served by the fake, but not under paypal_cert_issuer_url_prefixes
    fake.files[elsewhere] = der(pki.intermediate.certificate)
    serve(fake, pki.leaf_for(PAYPAL_HOST, aia=f"{fake.url}{elsewhere}"))
    with structlog.testing.capture_logs() as logs:
        response = await post_webhook(client, fake, "WH-AIA-1")
    assert response.status_code == 400 and response.json()["code"] == "invalid_webhook_signature"
    assert "paypal_cert_issuer_url_prefixes" in response.json()["detail"]
    assert fake.fetches(elsewhere) == 0 and certificate_fetches(fake) == 1
    [rejected] = [e for e in logs if e["event"] == "paypal_certificate_issuer_rejected"]
    assert rejected["issuer_urls"] == [f"{fake.url}{elsewhere}"]
    assert "paypal_cert_issuer_url_prefixes" in rejected["reason"]

    # By default only DigiCert's caIssuers host is allowed, so not the fake's (otherwise allowed) path
    allowed = issuer_path()
    fake.files[allowed] = der(pki.intermediate.certificate)
    serve(fake, pki.leaf_for(PAYPAL_HOST, aia=f"{fake.url}{allowed}"))
    defaults = Settings().paypal_cert_issuer_url_prefixes
    assert defaults == ["http://cacerts.digicert.com/", "https://cacerts.digicert.com/"]
    default_prefixes = PaypalProvider(
        settings.model_copy(update={"paypal_cert_issuer_url_prefixes": defaults})
    )
    body = capture_event()
    with pytest.raises(InvalidWebhookSignature, match="paypal_cert_issuer_url_prefixes"):
        await default_prefixes.parse_webhook(fake.sign(body, WEBHOOK_ID), body)
    assert fake.fetches(allowed) == 0
    assert await provider_events(session) == 0


def _missing(fake: PaypalCaFake, pki: Pki, path: str) -> str:
    return "HTTP 404"


def _timing_out(fake: PaypalCaFake, pki: Pki, path: str) -> str:
    fake.files[path] = der(pki.intermediate.certificate)
    fake.fail_next(*["timeout"] * 3, path=path)  # every attempt (provider_max_attempts = 3)
    return "timeout"


def _not_a_certificate(fake: PaypalCaFake, pki: Pki, path: str) -> str:
    fake.files[path] = b"<html>Moved</html>"
    return "not a certificate"


def _too_large(fake: PaypalCaFake, pki: Pki, path: str) -> str:
    fake.files[path] = der(pki.intermediate.certificate) + b"\0" * (64 * 1024)
    return "larger than 65536 bytes"


def _another_ca(fake: PaypalCaFake, pki: Pki, path: str) -> str:
    fake.files[path] = der(pki.root.certificate)  # a trusted CA, but not the one that issued the leaf
    return "not its issuer"


@pytest.mark.parametrize(
    "answer",
    [_missing, _timing_out, _not_a_certificate, _too_large, _another_ca],
    ids=["404", "timeout", "not-a-certificate", "over-64-KiB", "another-CA"],
)
async def test_an_issuer_that_cannot_be_fetched_is_400(
    answer: Any, client: httpx.AsyncClient, fake: PaypalCaFake, pki: Pki, session: AsyncSession
) -> None:
    path = issuer_path()
    reason = answer(fake, pki, path)
    serve(fake, pki.leaf_for(PAYPAL_HOST, aia=f"{fake.url}{path}"))
    with structlog.testing.capture_logs() as logs:
        response = await post_webhook(client, fake, "WH-AIA-1")
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_webhook_signature"
    assert "not trusted" in response.json()["detail"] and reason in response.json()["detail"]
    assert fake.fetches(path) >= 1  # it was asked for
    [rejected] = [e for e in logs if e["event"] == "paypal_certificate_issuer_rejected"]
    assert reason in rejected["reason"]
    assert await provider_events(session) == 0


async def test_an_issuer_from_an_untrusted_root_is_400_and_not_cached(
    client: httpx.AsyncClient, fake: PaypalCaFake, pki: Pki, session: AsyncSession
) -> None:
    rogue = Pki.make(pki.now, root_name="Rogue Root CA")  # not in the trust store
    path = issuer_path()
    fake.files[path] = der(rogue.intermediate.certificate)
    serve(fake, rogue.leaf_for(PAYPAL_HOST, aia=f"{fake.url}{path}"))
    for attempt in (1, 2):
        response = await post_webhook(client, fake, "WH-AIA-1")
        assert response.status_code == 400, response.text
        assert "not trusted" in response.json()["detail"]
        assert fake.fetches(path) == attempt  # fetched, did not chain, so not kept
    assert await provider_events(session) == 0


async def test_issuers_are_followed_at_most_three_levels_up(
    provider: PaypalProvider, fake: PaypalCaFake, pki: Pki
) -> None:
    """root -> CA 1 -> ... -> CA n -> leaf served alone, each certificate pointing at its issuer's location:
    three missing intermediates are fetched, a fourth is not."""
    paths = [issuer_path() for _ in range(MAX_ISSUER_FETCHES + 1)]
    issuer = pki.root
    cas = []
    for level, path in enumerate(paths):
        aia = f"{fake.url}{paths[level - 1]}" if level else None
        issuer = pki.intermediate_under(issuer, f"Emanet Test CA {level + 1}", aia=aia)
        fake.files[path] = der(issuer.certificate)
        cas.append(issuer)
    body = capture_event()

    four_deep = pki.leaf_for(PAYPAL_HOST, cas[-1], aia=f"{fake.url}{paths[-1]}")
    serve(fake, four_deep)
    with pytest.raises(InvalidWebhookSignature, match="after 3 issuer certificates"):
        await provider.parse_webhook(fake.sign(body, WEBHOOK_ID), body)
    assert [fake.fetches(p) for p in paths] == [0, 1, 1, 1]  # CAs 4, 3 and 2; CA 1 never asked for

    three_deep = pki.leaf_for(PAYPAL_HOST, cas[-2], aia=f"{fake.url}{paths[-2]}")
    fake.files["/certs/CERT-three"] = pem(three_deep.certificate)
    headers = fake.sign(body, WEBHOOK_ID, key=three_deep.key, cert_url=f"{fake.url}/certs/CERT-three")
    assert (await provider.parse_webhook(headers, body)).event_id == "WH-1"
    # CAs 3, 2 and 1: those of the rejected chain were not kept, so 3 and 2 are asked for again
    assert [fake.fetches(p) for p in paths] == [1, 2, 2, 1]


# PayPal's own sandbox message-verification certificate (PayPal-Java-SDK,
# rest-api-sdk/src/test/resources/clientCertTest.crt; valid 2019-04-02 to 2021-05-24), the DigiCert
# intermediate that issued it and DigiCert's root: the real shape of what PAYPAL-CERT-URL serves.
PAYPAL_SANDBOX_CERTIFICATE = b"""-----BEGIN CERTIFICATE-----
MIIHijCCBnKgAwIBAgIQB3GqTB0N3B8PmVGEuwt6/zANBgkqhkiG9w0BAQsFADB1
MQswCQYDVQQGEwJVUzEVMBMGA1UEChMMRGlnaUNlcnQgSW5jMRkwFwYDVQQLExB3
d3cuZGlnaWNlcnQuY29tMTQwMgYDVQQDEytEaWdpQ2VydCBTSEEyIEV4dGVuZGVk
IFZhbGlkYXRpb24gU2VydmVyIENBMB4XDTE5MDQwMjAwMDAwMFoXDTIxMDUyNDEy
MDAwMFowgf0xHTAbBgNVBA8MFFByaXZhdGUgT3JnYW5pemF0aW9uMRMwEQYLKwYB
BAGCNzwCAQMTAlVTMRkwFwYLKwYBBAGCNzwCAQITCERlbGF3YXJlMRAwDgYDVQQF
EwczMDE0MjY3MQswCQYDVQQGEwJVUzETMBEGA1UECBMKQ2FsaWZvcm5pYTERMA8G
A1UEBxMIU2FuIEpvc2UxFTATBgNVBAoTDFBheVBhbCwgSW5jLjEYMBYGA1UECxMP
UGFydG5lciBTdXBwb3J0MTQwMgYDVQQDEyttZXNzYWdldmVyaWZpY2F0aW9uY2Vy
dHMuc2FuZGJveC5wYXlwYWwuY29tMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIB
CgKCAQEAhk0EEavi3s7O0rXkPQ3zWbW8gGISd0iP43Je+8Ydo3uqgSjoF6C0Ih+T
7kM9Vq/fa3TqcfEM5FFJBf8AxYrC1POfRknDTMZF2jvyMNoOvEKrGI/boZpR71LK
0ZQuLzXGbqzIcPE+PYcr75lVEITX7CdblXhup40XINGxhduFmEuf6qpqamGFXEW6
PnKgVIK7lRrahp6wFRySLp8uPYBmIY9oJdCzNJMgR6kH+qCTGexoFYM/bthn7UoI
2qpgaxR54OPdlalGLCZ95cU1av4cz4gvuT4w+0E67PJVefNInjTbxitRzmbmfDmy
4EACE5f5MvQl+/3fxh2J8esdBU8qZwIDAQABo4IDizCCA4cwHwYDVR0jBBgwFoAU
PdNQpdagre7zSmAKZdMh1Pj41g8wHQYDVR0OBBYEFD86g/8OQmYZVefgSxQDdoQ/
a+ObMDYGA1UdEQQvMC2CK21lc3NhZ2V2ZXJpZmljYXRpb25jZXJ0cy5zYW5kYm94
LnBheXBhbC5jb20wDgYDVR0PAQH/BAQDAgWgMB0GA1UdJQQWMBQGCCsGAQUFBwMB
BggrBgEFBQcDAjB1BgNVHR8EbjBsMDSgMqAwhi5odHRwOi8vY3JsMy5kaWdpY2Vy
dC5jb20vc2hhMi1ldi1zZXJ2ZXItZzIuY3JsMDSgMqAwhi5odHRwOi8vY3JsNC5k
aWdpY2VydC5jb20vc2hhMi1ldi1zZXJ2ZXItZzIuY3JsMEsGA1UdIAREMEIwNwYJ
YIZIAYb9bAIBMCowKAYIKwYBBQUHAgEWHGh0dHBzOi8vd3d3LmRpZ2ljZXJ0LmNv
bS9DUFMwBwYFZ4EMAQEwgYgGCCsGAQUFBwEBBHwwejAkBggrBgEFBQcwAYYYaHR0
cDovL29jc3AuZGlnaWNlcnQuY29tMFIGCCsGAQUFBzAChkZodHRwOi8vY2FjZXJ0
cy5kaWdpY2VydC5jb20vRGlnaUNlcnRTSEEyRXh0ZW5kZWRWYWxpZGF0aW9uU2Vy
dmVyQ0EuY3J0MAwGA1UdEwEB/wQCMAAwggF/BgorBgEEAdZ5AgQCBIIBbwSCAWsB
aQB2ALvZ37wfinG1k5Qjl6qSe0c4V5UKq1LoGpCWZDaOHtGFAAABad+/lkUAAAQD
AEcwRQIgT9BVT/eHgjGr6rUUYcQIhVFYnfZ6nJGGPTyIT7pOGvoCIQC9n9SpeR8a
RGMwCbxjRcPFxXMIpkdoKOWrYO4s0zjE9AB2AFYUBpov18Ls0/XhvUSyPsdGdrm8
mRFcwO+UmFXWidDdAAABad+/lsIAAAQDAEcwRQIgAYEuDGKo0fzMUu7gbgshzDc1
On5OUGEYPb7XxAhRcEcCIQCEMEo0Dg18DsTA3xfeGxGluPEERqCSPDJHw6DHLt7H
XgB3AId1v+dZfPiMQ5lfvfNu/1aNR1Y2/0q1YMG06v9eoIMPAAABad+/mJAAAAQD
AEgwRgIhAIfjNYkADzqs0QlTLWWKrBf5eFEiGJZm6pB7XD8FyVc9AiEA/bxg9jFP
un3Xdorxxo1H0kx761k/V5Qt4kxkBYmHsdAwDQYJKoZIhvcNAQELBQADggEBAFdV
EwP/P8X1HzkYcFi82vRbUd9uLn4DnnHJH2Y5mcsH6wXi5hhMtJDMAm4vd39m0r82
MWHvpK+Hxh4e+DzNEiLPowerZNxtRo7bqV67BavDUG5yuAzVPPWZSdoYRwYUQBWM
9QZvVnLdZTh2R3DemH7t6awCu5ePo+XLzJXTMHvW93rzzpktXO6GfsFsXLh5/a43
Go5OaSZZYofmV/SxRiQyvE+RZHysDKAtHcU0xJJRfSzaBrLkAwO55+QSscrdPMpG
B5TCRdCa3nvtJOjfhSCgGi1MWUaLaHviSDTwm6LtczvYtFO+56jQPaMcty4JFeqn
nj67G5R+JlvQHScHGWA=
-----END CERTIFICATE-----
"""
DIGICERT_SHA2_EV_SERVER_CA = b"""-----BEGIN CERTIFICATE-----
MIIEtjCCA56gAwIBAgIQDHmpRLCMEZUgkmFf4msdgzANBgkqhkiG9w0BAQsFADBs
MQswCQYDVQQGEwJVUzEVMBMGA1UEChMMRGlnaUNlcnQgSW5jMRkwFwYDVQQLExB3
d3cuZGlnaWNlcnQuY29tMSswKQYDVQQDEyJEaWdpQ2VydCBIaWdoIEFzc3VyYW5j
ZSBFViBSb290IENBMB4XDTEzMTAyMjEyMDAwMFoXDTI4MTAyMjEyMDAwMFowdTEL
MAkGA1UEBhMCVVMxFTATBgNVBAoTDERpZ2lDZXJ0IEluYzEZMBcGA1UECxMQd3d3
LmRpZ2ljZXJ0LmNvbTE0MDIGA1UEAxMrRGlnaUNlcnQgU0hBMiBFeHRlbmRlZCBW
YWxpZGF0aW9uIFNlcnZlciBDQTCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoC
ggEBANdTpARR+JmmFkhLZyeqk0nQOe0MsLAAh/FnKIaFjI5j2ryxQDji0/XspQUY
uD0+xZkXMuwYjPrxDKZkIYXLBxA0sFKIKx9om9KxjxKws9LniB8f7zh3VFNfgHk/
LhqqqB5LKw2rt2O5Nbd9FLxZS99RStKh4gzikIKHaq7q12TWmFXo/a8aUGxUvBHy
/Urynbt/DvTVvo4WiRJV2MBxNO723C3sxIclho3YIeSwTQyJ3DkmF93215SF2AQh
cJ1vb/9cuhnhRctWVyh+HA1BV6q3uCe7seT6Ku8hI3UarS2bhjWMnHe1c63YlC3k
8wyd7sFOYn4XwHGeLN7x+RAoGTMCAwEAAaOCAUkwggFFMBIGA1UdEwEB/wQIMAYB
Af8CAQAwDgYDVR0PAQH/BAQDAgGGMB0GA1UdJQQWMBQGCCsGAQUFBwMBBggrBgEF
BQcDAjA0BggrBgEFBQcBAQQoMCYwJAYIKwYBBQUHMAGGGGh0dHA6Ly9vY3NwLmRp
Z2ljZXJ0LmNvbTBLBgNVHR8ERDBCMECgPqA8hjpodHRwOi8vY3JsNC5kaWdpY2Vy
dC5jb20vRGlnaUNlcnRIaWdoQXNzdXJhbmNlRVZSb290Q0EuY3JsMD0GA1UdIAQ2
MDQwMgYEVR0gADAqMCgGCCsGAQUFBwIBFhxodHRwczovL3d3dy5kaWdpY2VydC5j
b20vQ1BTMB0GA1UdDgQWBBQ901Cl1qCt7vNKYApl0yHU+PjWDzAfBgNVHSMEGDAW
gBSxPsNpA/i/RwHUmCYaCALvY2QrwzANBgkqhkiG9w0BAQsFAAOCAQEAnbbQkIbh
hgLtxaDwNBx0wY12zIYKqPBKikLWP8ipTa18CK3mtlC4ohpNiAexKSHc59rGPCHg
4xFJcKx6HQGkyhE6V6t9VypAdP3THYUYUN9XR3WhfVUgLkc3UHKMf4Ib0mKPLQNa
2sPIoc4sUqIAY+tzunHISScjl2SFnjgOrWNoPLpSgVh5oywM395t6zHyuqB8bPEs
1OG9d4Q3A84ytciagRpKkk47RpqF/oOi+Z6Mo8wNXrM9zwR4jxQUezKcxwCmXMS1
oVWNWlZopCJwqjyBcdmdqEU79OX2olHdx3ti6G8MdOu42vi/hw15UJGQmxg7kVkn
8TUoE6smftX3eg==
-----END CERTIFICATE-----
"""
DIGICERT_HIGH_ASSURANCE_EV_ROOT_CA = b"""-----BEGIN CERTIFICATE-----
MIIDxTCCAq2gAwIBAgIQAqxcJmoLQJuPC3nyrkYldzANBgkqhkiG9w0BAQUFADBs
MQswCQYDVQQGEwJVUzEVMBMGA1UEChMMRGlnaUNlcnQgSW5jMRkwFwYDVQQLExB3
d3cuZGlnaWNlcnQuY29tMSswKQYDVQQDEyJEaWdpQ2VydCBIaWdoIEFzc3VyYW5j
ZSBFViBSb290IENBMB4XDTA2MTExMDAwMDAwMFoXDTMxMTExMDAwMDAwMFowbDEL
MAkGA1UEBhMCVVMxFTATBgNVBAoTDERpZ2lDZXJ0IEluYzEZMBcGA1UECxMQd3d3
LmRpZ2ljZXJ0LmNvbTErMCkGA1UEAxMiRGlnaUNlcnQgSGlnaCBBc3N1cmFuY2Ug
RVYgUm9vdCBDQTCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBAMbM5XPm
+9S75S0tMqbf5YE/yc0lSbZxKsPVlDRnogocsF9ppkCxxLeyj9CYpKlBWTrT3JTW
PNt0OKRKzE0lgvdKpVMSOO7zSW1xkX5jtqumX8OkhPhPYlG++MXs2ziS4wblCJEM
xChBVfvLWokVfnHoNb9Ncgk9vjo4UFt3MRuNs8ckRZqnrG0AFFoEt7oT61EKmEFB
Ik5lYYeBQVCmeVyJ3hlKV9Uu5l0cUyx+mM0aBhakaHPQNAQTXKFx01p8VdteZOE3
hzBWBOURtCmAEvF5OYiiAhF8J2a3iLd48soKqDirCmTCv2ZdlYTBoSUeh10aUAsg
EsxBu24LUTi4S8sCAwEAAaNjMGEwDgYDVR0PAQH/BAQDAgGGMA8GA1UdEwEB/wQF
MAMBAf8wHQYDVR0OBBYEFLE+w2kD+L9HAdSYJhoIAu9jZCvDMB8GA1UdIwQYMBaA
FLE+w2kD+L9HAdSYJhoIAu9jZCvDMA0GCSqGSIb3DQEBBQUAA4IBAQAcGgaX3Nec
nzyIZgYIVyHbIUf4KmeqvxgydkAQV8GK83rZEWWONfqe/EW1ntlMMUu4kehDLI6z
eM7b41N5cdblIZQB2lWHmiRk9opmzN6cN82oNLFpmyPInngiK3BD41VHMWEZ71jF
hS9OMPagMRYjyOfiZRYzy78aG6A9+MpeizGLYAiJLQwGXFK3xPkKmNEVX58Svnw2
Yzi9RKR/5CYrCsSXaQ3pjOLAEFe4yHYSkVXySGnYvCoCWw9E1CAx2/S6cCZdkGCe
vEsXCS+0yx5DaMkHJ8HSXPfqIbloEpw8nL+e/IBcm2PN7EeqJSdnoDfzAIJ9VNep
+OkuE6N36B9K
-----END CERTIFICATE-----
"""


async def test_paypals_real_certificate_passes_the_chain_and_name_checks(
    fake: PaypalFake, settings: Settings, clock: FrozenClock, tmp_path: Path
) -> None:
    """Without PayPal's private key no real signature can be made here: a signature by another key must
    fail on the signature itself, which is checked only after the chain and the name were accepted."""
    digicert = tmp_path / "digicert.pem"
    digicert.write_bytes(DIGICERT_HIGH_ASSURANCE_EV_ROOT_CA)
    provider = PaypalProvider(settings.model_copy(update={"paypal_cert_ca_bundle": str(digicert)}))
    fake.certificate_pem = PAYPAL_SANDBOX_CERTIFICATE + DIGICERT_SHA2_EV_SERVER_CA
    body = capture_event()
    clock.set(datetime(2020, 6, 1, tzinfo=UTC))
    with pytest.raises(InvalidWebhookSignature, match="PAYPAL-TRANSMISSION-SIG does not verify"):
        await provider.parse_webhook(fake.sign(body, WEBHOOK_ID), body)
    clock.set(datetime(2021, 6, 1, tzinfo=UTC))  # the certificate expired on 2021-05-24
    with pytest.raises(InvalidWebhookSignature, match="not valid now"):
        await provider.parse_webhook(fake.sign(body, WEBHOOK_ID), body)


def test_paypals_real_certificate_names_an_allowed_issuer_location() -> None:
    """The real sandbox certificate carries DigiCert's caIssuers URL, which the default prefixes allow."""
    [location] = ca_issuers_urls(x509.load_pem_x509_certificate(PAYPAL_SANDBOX_CERTIFICATE))
    assert location == "http://cacerts.digicert.com/DigiCertSHA2ExtendedValidationServerCA.crt"
    assert any(location.startswith(prefix) for prefix in Settings().paypal_cert_issuer_url_prefixes)
    assert ca_issuers_urls(x509.load_pem_x509_certificate(DIGICERT_HIGH_ASSURANCE_EV_ROOT_CA)) == []
