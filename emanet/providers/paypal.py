"""PayPal: Orders v2 (approve, then capture), refunds, Payouts, Transaction Search, signed webhooks. httpx.

Sources: OAuth client credentials (https://developer.paypal.com/api/rest/authentication/), Orders v2
(https://developer.paypal.com/docs/api/orders/v2/ — create with ``payment_source.paypal.experience_context``,
the ``payer-action``/``approve`` link, capture), idempotency with ``PayPal-Request-Id``
(https://developer.paypal.com/api/rest/reference/idempotency/), captures' refunds
(https://developer.paypal.com/docs/api/payments/v2/#captures_refund), Payouts
(https://developer.paypal.com/docs/api/payments.payouts-batch/v1/ — ``sender_batch_id``), Transaction Search
(https://developer.paypal.com/docs/api/transaction-search/v1/), webhook events and signatures
(https://developer.paypal.com/api/rest/webhooks/rest/ and ``verify-webhook-signature``'s field definitions).

Flow: ``create_payment`` creates an order with ``intent=CAPTURE`` and answers a redirect to PayPal's approval
page; when the payer has approved, ``get_payment`` (hence also ``complete_payment`` on the browser's return
and any status poll) captures the order with ``PayPal-Request-Id: {order_id}-capture``, so it is captured
exactly once whoever asks first. A declined funding source (``INSTRUMENT_DECLINED``) is a failed payment.

Webhooks are verified offline per PayPal's self-verification method
(https://developer.paypal.com/api/rest/webhooks/rest/): the RSA-SHA256 (``PAYPAL-AUTH-ALGO: SHA256withRSA``)
signature ``PAYPAL-TRANSMISSION-SIG`` over ``"{transmission_id}|{transmission_time}|{webhook_id}|{crc32}"``
(CRC-32 of the raw body as an unsigned decimal), checked with the public key of the certificate at
``PAYPAL-CERT-URL``; the transmission time must be inside ``webhook_tolerance_seconds``. The certificate is
fetched only from URLs starting with one of ``settings.paypal_cert_url_prefixes`` (PayPal's API hosts over
HTTPS) and is trusted as PayPal's own SDKs trust it: its chain must lead to a trusted DigiCert root and its
name must be PayPal's message-verification host — the Java SDK's ``SSLUtil.validateCertificateChain``
(https://github.com/paypal/PayPal-Java-SDK/blob/master/rest-api-sdk/src/main/java/com/paypal/base/SSLUtil.java:
trust chain, every certificate valid now, subject ``CN=messageverificationcerts*.paypal.com``) and the Python
SDK's ``WebhookEvent.verify`` (https://github.com/paypal/PayPal-Python-SDK/pull/100: chain to DigiCert, common
name under ``.paypal.com``, not expired).

The URL serves a PEM bundle, the signing (leaf) certificate first, then its intermediates. The leaf must chain
through them to a root of ``settings.paypal_cert_ca_bundle`` (unset: certifi's Mozilla bundle; PayPal moved to
DigiCert Global Root G2, https://github.com/Sylius/PayPalPlugin/issues/300 quotes PayPal's notice) and be
issued to ``messageverificationcerts.paypal.com`` or ``messageverificationcerts.sandbox.paypal.com``. It is a
DigiCert Web PKI TLS certificate (subjectAltName with that name, ``serverAuth`` and ``clientAuth`` extended
key usages — the sandbox one in PayPal's Java SDK test resources ``clientCertTest.crt`` is), so
``cryptography``'s server verifier checks it (https://cryptography.io/en/latest/x509/verification/,
``build_server_verifier``): path building to the store, every signature, CA basic constraints and key usage on
issuers, every certificate valid at ``clock.now()``, the name matched in the subjectAltName, ``serverAuth``.
The client verifier would demand ``clientAuth``, which public TLS certificates are dropping, and match no
name. A verified certificate is cached by URL and trust store, so a chain is verified once per URL; each later
use re-checks that now is inside the validity of every certificate of that chain.

PayPal's URL may serve the leaf alone (the Java SDK's test resource ``clientCertTest.crt`` is that one
certificate), so a bundle that stops short of the trust store is completed as browsers do, by Authority
Information Access (RFC 5280 section 4.2.2.1, https://www.rfc-editor.org/rfc/rfc5280#section-4.2.2.1): when
the verification fails, the bundle's last certificate is neither self-issued nor issued by a root of the
store, and it carries an ``id-ad-caIssuers`` URI (``x509.AuthorityInformationAccess``,
https://cryptography.io/en/latest/x509/reference/#cryptography.x509.AuthorityInformationAccess), the
certificate there (DER, as DigiCert serves http://cacerts.digicert.com/...crt, or PEM) is fetched, must be
named as that certificate's issuer, and joins the intermediates for another verification; at most
``MAX_ISSUER_FETCHES`` times per chain. Issuers are fetched only from URLs starting with one of
``settings.paypal_cert_issuer_url_prefixes`` (DigiCert's caIssuers host), with the provider HTTP client's
timeouts and retries, reading at most ``MAX_ISSUER_BYTES``. The PayPal sandbox certificate quoted in the
tests names http://cacerts.digicert.com/DigiCertSHA2ExtendedValidationServerCA.crt. An issuer that completed
a verified chain is cached by URL; a URL not allowed, a failed or oversized fetch, something that is not the
issuer's certificate, or a chain that still ends short of a trusted root rejects the webhook
(``InvalidWebhookSignature``) and logs why (``paypal_certificate_issuer_rejected``).
"""

from __future__ import annotations

import base64
import binascii
import re
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import certifi
import httpx
import orjson
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import AuthorityInformationAccessOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from emanet.core import clock
from emanet.core.money import currency_exponent
from emanet.providers import http
from emanet.providers.base import (
    CreatePayment,
    InvalidWebhookSignature,
    NextAction,
    PaymentProvider,
    PaymentStatus,
    PayoutDestination,
    PayoutStatus,
    ProviderDeclined,
    ProviderNotConfigured,
    ProviderPayment,
    ProviderPayout,
    ProviderRefund,
    ProviderUnavailable,
    RefundStatus,
    SettlementKind,
    SettlementRecord,
    WebhookEvent,
    header,
)

log = structlog.get_logger("emanet.providers.paypal")

PAYPAL_CURRENCIES = frozenset(
    {
        "USD",
        "EUR",
        "GBP",
        "AUD",
        "CAD",
        "JPY",
        "CHF",
        "SEK",
        "NOK",
        "DKK",
        "PLN",
        "CZK",
        "MXN",
        "NZD",
        "SGD",
        "HKD",
        "ILS",
        "THB",
        "PHP",
        "BRL",
    }
)
_ORDER_STATUS: dict[str, PaymentStatus] = {
    "CREATED": "requires_action",
    "SAVED": "requires_action",
    "PAYER_ACTION_REQUIRED": "requires_action",
    "APPROVED": "processing",
    "COMPLETED": "succeeded",
    "VOIDED": "cancelled",
}
_CAPTURE_STATUS: dict[str, PaymentStatus] = {
    "COMPLETED": "succeeded",
    "PENDING": "processing",
    "DECLINED": "failed",
    "FAILED": "failed",
    "REFUNDED": "refunded",
    "PARTIALLY_REFUNDED": "partially_refunded",
}
_REFUND_STATUS: dict[str, RefundStatus] = {
    "COMPLETED": "succeeded",
    "PENDING": "pending",
    "FAILED": "failed",
    "CANCELLED": "failed",
}
_PAYOUT_ITEM_STATUS: dict[str, PayoutStatus] = {
    "SUCCESS": "paid",
    "FAILED": "failed",
    "RETURNED": "failed",
    "BLOCKED": "failed",
    "REFUNDED": "failed",
    "REVERSED": "failed",
    "DENIED": "failed",
    "CANCELED": "failed",
    "PENDING": "processing",
    "ONHOLD": "processing",
    "UNCLAIMED": "processing",
    "NEW": "pending",
}
_PAYMENT_EVENTS: dict[str, PaymentStatus] = {
    "CHECKOUT.ORDER.APPROVED": "processing",
    "PAYMENT.CAPTURE.COMPLETED": "succeeded",
    "PAYMENT.CAPTURE.PENDING": "processing",
    "PAYMENT.CAPTURE.DECLINED": "failed",
    "PAYMENT.CAPTURE.DENIED": "failed",
}
AUTH_ALGO = "SHA256withRSA"
# The names PayPal's webhook-signing certificates are issued to: live, then sandbox.
SIGNING_CERTIFICATE_NAMES = (
    "messageverificationcerts.paypal.com",
    "messageverificationcerts.sandbox.paypal.com",
)
# Issuer certificates fetched from caIssuers URLs for one chain, at most; and the most read of each answer.
MAX_ISSUER_FETCHES = 3
MAX_ISSUER_BYTES = 64 * 1024


@dataclass(frozen=True)
class _TrustStore:
    """The roots of a CA bundle, and their subjects (a chain reaching one of them needs no more issuers)."""

    store: Store
    subjects: frozenset[x509.Name]


@dataclass(frozen=True)
class _VerifiedCertificate:
    """A signing certificate whose chain verified, and the span in which every certificate of it is valid."""

    certificate: x509.Certificate
    valid_from: datetime
    valid_until: datetime


# Access tokens by (API base, client id), until shortly before they expire.
_tokens: dict[tuple[str, str], tuple[str, datetime]] = {}
# Webhook certificates whose chain verified, by (URL, trust store file).
_certificates: dict[tuple[str, str], _VerifiedCertificate] = {}
# Issuer certificates fetched from caIssuers URLs that completed a verified chain, by URL.
_issuers: dict[str, x509.Certificate] = {}
# Trust stores by PEM file.
_trust_stores: dict[str, _TrustStore] = {}
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def to_decimal(amount: int, currency: str) -> str:
    exponent = currency_exponent(currency)
    return str((Decimal(amount) / (Decimal(10) ** exponent)).quantize(Decimal(1).scaleb(-exponent)))


def from_decimal(value: str, currency: str) -> int:
    try:
        minor = Decimal(value).scaleb(currency_exponent(currency))
    except InvalidOperation as exc:
        raise ProviderDeclined(f"PayPal sent an unreadable amount {value!r}") from exc
    if minor != minor.to_integral_value():
        raise ProviderDeclined(f"PayPal sent {value} {currency}, finer than the currency's minor unit")
    return int(minor)


class PaypalProvider(PaymentProvider):
    name = "paypal"
    display_name = "PayPal"
    supported_currencies = PAYPAL_CURRENCIES
    supports_payouts = True

    def methods(self, currency: str, country: str | None = None) -> list[str]:
        return ["paypal", "card"] if self.supports_currency(currency) else []

    # ---- plumbing
    async def _token(self, client: httpx.AsyncClient, *, fresh: bool = False) -> str:
        client_id = self.require(self.settings.paypal_client_id, "paypal_client_id")
        secret = self.require(self.settings.paypal_client_secret, "paypal_client_secret")
        key = (self.settings.paypal_api_base, client_id)
        cached = _tokens.get(key)
        if cached and not fresh and cached[1] > clock.now():
            return cached[0]
        response = await http.request(
            client,
            "paypal",
            self.settings,
            "POST",
            "/v1/oauth2/token",
            idempotent=True,
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        )
        data = _body(response)
        expires = clock.now() + timedelta(seconds=max(0, int(data.get("expires_in", 300)) - 60))
        _tokens[key] = (data["access_token"], expires)
        return str(data["access_token"])

    async def _call(
        self,
        method: str,
        path: str,
        *,
        request_id: str | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Every PayPal call here is idempotent: reads, and writes carrying ``PayPal-Request-Id``."""
        async with http.provider_client(self.settings, self.settings.paypal_api_base) as client:
            for attempt in ("cached token", "fresh token"):
                headers = {
                    "Authorization": f"Bearer {await self._token(client, fresh=attempt == 'fresh token')}",
                    "Prefer": "return=representation",
                }
                if request_id:
                    headers["PayPal-Request-Id"] = request_id
                response = await http.request(
                    client,
                    "paypal",
                    self.settings,
                    method,
                    path,
                    idempotent=True,
                    json=json,
                    params=params,
                    headers=headers,
                )
                if response.status_code != 401:
                    break
        return _body(response)

    # ---- payments
    async def create_payment(self, req: CreatePayment) -> ProviderPayment:
        if not self.supports_currency(req.currency):
            raise ProviderDeclined(
                f"PayPal does not take {req.currency} here", decline_code="invalid_currency"
            )
        order = await self._call(
            "POST",
            "/v2/checkout/orders",
            request_id=req.payment_id,
            json={
                "intent": "CAPTURE",
                "purchase_units": [
                    {
                        "reference_id": req.payment_id,
                        "custom_id": req.payment_id,
                        "description": req.description[:127],
                        "amount": {
                            "currency_code": req.currency,
                            "value": to_decimal(req.amount, req.currency),
                        },
                    }
                ],
                "payment_source": {
                    "paypal": {
                        "experience_context": {
                            "return_url": req.return_url,
                            "cancel_url": req.return_url,
                            "user_action": "PAY_NOW",
                            "shipping_preference": "NO_SHIPPING",
                        }
                    }
                },
            },
        )
        return _order_payment(order)

    async def get_payment(self, reference: str) -> ProviderPayment:
        order = await self._call("GET", f"/v2/checkout/orders/{reference}")
        if order.get("status") == "APPROVED":
            order = await self._capture(reference)
        return _order_payment(order)

    async def _capture(self, order_id: str) -> dict[str, Any]:
        try:
            captured: dict[str, Any] = await self._call(
                "POST", f"/v2/checkout/orders/{order_id}/capture", request_id=f"{order_id}-capture", json={}
            )
        except ProviderDeclined as exc:
            if exc.decline_code != "INSTRUMENT_DECLINED":
                raise
            return {"id": order_id, "status": "DECLINED", "decline": exc.decline_code, "message": exc.detail}
        return captured

    # ---- refunds
    async def refund(
        self, reference: str, amount: int, currency: str, *, idempotency_key: str
    ) -> ProviderRefund:
        order = await self._call("GET", f"/v2/checkout/orders/{reference}")
        capture = _capture_of(order)
        if capture is None:
            raise ProviderDeclined(
                "The PayPal order has no capture to refund", decline_code="charge_not_refundable"
            )
        refund = await self._call(
            "POST",
            f"/v2/payments/captures/{capture['id']}/refund",
            request_id=idempotency_key,
            json={
                "amount": {"currency_code": currency, "value": to_decimal(amount, currency)},
                "invoice_id": idempotency_key[:127],
            },
        )
        return ProviderRefund(
            reference=refund["id"],
            status=_REFUND_STATUS.get(str(refund.get("status")), "pending"),
            amount=amount,
            raw=refund,
        )

    # ---- payouts
    async def create_payout(
        self, payout_id: str, amount: int, currency: str, destination: PayoutDestination
    ) -> ProviderPayout:
        email = destination.get("email")
        if not email:
            raise ProviderDeclined(
                "PayPal payouts go to a PayPal account's e-mail address", decline_code="invalid_destination"
            )
        batch = await self._call(
            "POST",
            "/v1/payments/payouts",
            request_id=payout_id,
            json={
                "sender_batch_header": {
                    "sender_batch_id": payout_id,
                    "recipient_type": "EMAIL",
                    "email_subject": "You have a payout from Emanet",
                },
                "items": [
                    {
                        "recipient_type": "EMAIL",
                        "receiver": email,
                        "sender_item_id": payout_id,
                        "amount": {"value": to_decimal(amount, currency), "currency": currency},
                    }
                ],
            },
        )
        return _batch_payout(batch)

    async def get_payout(self, reference: str) -> ProviderPayout:
        return _batch_payout(await self._call("GET", f"/v1/payments/payouts/{reference}"))

    # ---- reconciliation
    async def list_settlements(self, day: date) -> list[SettlementRecord]:
        start = datetime.combine(day, time.min, UTC)
        end = start + timedelta(days=1) - timedelta(seconds=1)
        records: list[SettlementRecord] = []
        page, total_pages = 1, 1
        while page <= total_pages:
            data = await self._call(
                "GET",
                "/v1/reporting/transactions",
                params={
                    "start_date": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "end_date": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "fields": "transaction_info",
                    "page_size": 500,
                    "page": page,
                },
            )
            records += [
                r
                for r in (
                    _settlement(d.get("transaction_info") or {})
                    for d in data.get("transaction_details") or []
                )
                if r is not None
            ]
            total_pages = int(data.get("total_pages") or 1)
            page += 1
        return records

    # ---- webhooks
    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, remote_ip: str | None = None
    ) -> WebhookEvent:
        self.check_remote_ip(remote_ip)
        webhook_id = self.require(self.settings.paypal_webhook_id, "paypal_webhook_id")
        names = (
            "PAYPAL-TRANSMISSION-ID",
            "PAYPAL-TRANSMISSION-TIME",
            "PAYPAL-TRANSMISSION-SIG",
            "PAYPAL-CERT-URL",
            "PAYPAL-AUTH-ALGO",
        )
        transmission_id, transmission_time, signature, cert_url, algo = (header(headers, n) for n in names)
        if not (transmission_id and transmission_time and signature and cert_url):
            raise InvalidWebhookSignature("Missing PayPal transmission headers")
        if algo != AUTH_ALGO:
            raise InvalidWebhookSignature(f"Unsupported PAYPAL-AUTH-ALGO {algo!r}")
        try:
            sent_at = datetime.fromisoformat(transmission_time.replace("Z", "+00:00"))
            signature_bytes = base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise InvalidWebhookSignature("Malformed PayPal transmission time or signature") from exc
        if sent_at.tzinfo is None:
            raise InvalidWebhookSignature("PayPal transmission time has no time zone")
        self.check_timestamp(sent_at.timestamp())
        certificate = await self._certificate(cert_url)
        message = f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(body)}".encode()
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidWebhookSignature("The PayPal certificate does not hold an RSA key")
        try:
            public_key.verify(signature_bytes, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature as exc:
            raise InvalidWebhookSignature("PAYPAL-TRANSMISSION-SIG does not verify") from exc
        try:
            return _event(orjson.loads(body))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidWebhookSignature("The body is not a PayPal event") from exc

    async def _certificate(self, url: str) -> x509.Certificate:
        if not any(url.startswith(prefix) for prefix in self.settings.paypal_cert_url_prefixes):
            raise InvalidWebhookSignature("PAYPAL-CERT-URL is not one of PayPal's certificate locations")
        bundle = self.settings.paypal_cert_ca_bundle or certifi.where()
        verified = _certificates.get((url, bundle))
        if verified is None:
            trust = _trust_store(bundle)
            async with http.provider_client(self.settings, url) as client:
                response = await http.request(client, "paypal", self.settings, "GET", url, idempotent=True)
            if not response.is_success:
                raise InvalidWebhookSignature(
                    f"The PayPal certificate could not be fetched ({response.status_code})"
                )
            try:
                # The signing (leaf) certificate first, then the intermediates that issued it.
                leaf, *intermediates = x509.load_pem_x509_certificates(response.content)
            except ValueError as exc:
                raise InvalidWebhookSignature("PAYPAL-CERT-URL does not serve a certificate") from exc
            verified = await self._verify_with_issuers(url, leaf, intermediates, trust)
            _certificates[(url, bundle)] = verified
        if not verified.valid_from <= clock.now() <= verified.valid_until:
            raise InvalidWebhookSignature("The PayPal certificate or one of its issuers is not valid now")
        return verified.certificate

    async def _verify_with_issuers(
        self, url: str, leaf: x509.Certificate, intermediates: list[x509.Certificate], trust: _TrustStore
    ) -> _VerifiedCertificate:
        """``_verify_chain``, completing a chain that stops short of the trust store from the caIssuers URL
        of its last certificate, at most ``MAX_ISSUER_FETCHES`` times (see the module docstring)."""
        chain = list(intermediates)
        followed: list[str] = []
        fetched: dict[str, x509.Certificate] = {}
        try:
            while True:
                try:
                    verified = _verify_chain(leaf, chain, trust.store)
                except InvalidWebhookSignature as failure:
                    top = chain[-1] if chain else leaf
                    if top.issuer == top.subject or top.issuer in trust.subjects:
                        raise  # the chain reaches a root: another issuer would not help
                    locations = ca_issuers_urls(top)
                    if not locations:
                        raise
                    if len(followed) == MAX_ISSUER_FETCHES:
                        raise InvalidWebhookSignature(
                            f"{failure.detail}; still no trusted root after {MAX_ISSUER_FETCHES} issuer "
                            "certificates"
                        ) from failure
                    location = next(filter(self._issuer_url_allowed, locations), locations[0])
                    followed.append(location)
                    # Plain http:// prefixes are acceptable (DigiCert serves caIssuers over HTTP): a fetched
                    # issuer is only a candidate intermediate, verified against the trust store like the rest
                    # of the chain before anything relies on it.
                    if not self._issuer_url_allowed(location):
                        raise InvalidWebhookSignature(
                            f"The PayPal certificate is not trusted: its issuer's location {location!r} is "
                            "not one of paypal_cert_issuer_url_prefixes"
                        ) from failure
                    issuer = fetched.get(location) or _issuers.get(location)
                    if issuer is None:
                        issuer = fetched[location] = await self._fetch_issuer(location, top)
                    chain.append(issuer)
                else:
                    _issuers.update(fetched)
                    return verified
        except InvalidWebhookSignature as exc:
            if followed:
                log.warning(
                    "paypal_certificate_issuer_rejected",
                    cert_url=url,
                    issuer_urls=followed,
                    reason=exc.detail,
                )
            raise

    def _issuer_url_allowed(self, location: str) -> bool:
        return any(location.startswith(prefix) for prefix in self.settings.paypal_cert_issuer_url_prefixes)

    async def _fetch_issuer(self, location: str, subject: x509.Certificate) -> x509.Certificate:
        """The certificate at an allowed caIssuers URL, which must be the one that issued ``subject``; read
        with the provider client's timeouts and retries, at most ``MAX_ISSUER_BYTES`` of it."""
        unreachable = (
            f"The PayPal certificate is not trusted: its issuer could not be fetched from {location}"
        )
        async with http.provider_client(self.settings, location) as client:

            async def get() -> tuple[int, bytes]:
                async with client.stream("GET", location) as response:
                    if http.is_transient_status(response.status_code):
                        raise http.TransientResponse(response)
                    content = bytearray()
                    if response.is_success:
                        async for chunk in response.aiter_bytes():
                            content += chunk
                            if len(content) > MAX_ISSUER_BYTES:
                                raise InvalidWebhookSignature(
                                    f"{unreachable} (larger than {MAX_ISSUER_BYTES} bytes)"
                                )
                    return response.status_code, bytes(content)

            try:
                status, content = await http.with_retries(
                    "paypal", self.settings, get, idempotent=True, what=f"GET {location}"
                )
            except (ProviderUnavailable, httpx.HTTPError, httpx.InvalidURL) as exc:
                raise InvalidWebhookSignature(f"{unreachable} ({exc})") from exc
        if not 200 <= status < 300:
            raise InvalidWebhookSignature(f"{unreachable} (HTTP {status})")
        try:
            issuer = _load_certificate(content)
        except ValueError as exc:
            raise InvalidWebhookSignature(f"{unreachable} (not a certificate)") from exc
        if issuer.subject != subject.issuer:
            raise InvalidWebhookSignature(
                f"The PayPal certificate is not trusted: {location} serves "
                f"{issuer.subject.rfc4514_string()}, not its issuer {subject.issuer.rfc4514_string()}"
            )
        return issuer


def _trust_store(bundle: str) -> _TrustStore:
    trust = _trust_stores.get(bundle)
    if trust is None:
        try:
            blocks = _PEM_CERTIFICATE.findall(Path(bundle).read_bytes())
        except OSError:
            blocks = []
        roots = []
        with warnings.catch_warnings():
            # certifi carries a few roots with serial number 0, which cryptography warns of (and means to
            # refuse): such a root is left out rather than failing the whole store.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            for block in blocks:
                try:
                    roots.append(x509.load_pem_x509_certificate(block))
                except ValueError:
                    continue
        if not roots:
            raise ProviderNotConfigured(
                f"EMANET_PAYPAL_CERT_CA_BUNDLE {bundle!r} is not a readable PEM file of CA certificates"
            )
        trust = _trust_stores[bundle] = _TrustStore(Store(roots), frozenset(r.subject for r in roots))
    return trust


def ca_issuers_urls(certificate: x509.Certificate) -> list[str]:
    """The ``id-ad-caIssuers`` URIs of a certificate's Authority Information Access extension, in order."""
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [
        description.access_location.value
        for description in access
        if description.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(description.access_location, x509.UniformResourceIdentifier)
    ]


def _load_certificate(content: bytes) -> x509.Certificate:
    """A caIssuers answer: one DER certificate (RFC 5280 section 4.2.2.1), or PEM (its first certificate)."""
    try:
        return x509.load_der_x509_certificate(content)
    except ValueError:
        return x509.load_pem_x509_certificates(content)[0]


def _verify_chain(
    leaf: x509.Certificate, intermediates: list[x509.Certificate], store: Store
) -> _VerifiedCertificate:
    """The leaf, if it chains through ``intermediates`` to a root of ``store``, every certificate valid now,
    and is issued to one of PayPal's signing-certificate names (see the module docstring)."""
    builder = PolicyBuilder().store(store).time(clock.now())
    failure = "no name to match"
    for name in SIGNING_CERTIFICATE_NAMES:
        try:
            chain = builder.build_server_verifier(x509.DNSName(name)).verify(leaf, intermediates)
        except (VerificationError, ValueError) as exc:
            failure = str(exc)
            continue
        return _VerifiedCertificate(
            certificate=leaf,
            valid_from=max(c.not_valid_before_utc for c in chain),
            valid_until=min(c.not_valid_after_utc for c in chain),
        )
    raise InvalidWebhookSignature(f"The PayPal certificate is not trusted: {failure}")


# ---------------------------------------------------------------------------------------------- mapping
def _body(response: httpx.Response) -> Any:
    try:
        data = response.json() if response.content else {}
    except ValueError:
        data = {}
    if response.is_success:
        return data
    details = data.get("details") if isinstance(data, dict) else None
    issue = details[0].get("issue") if isinstance(details, list) and details else None
    name = data.get("name") if isinstance(data, dict) else None
    message = (data.get("message") if isinstance(data, dict) else None) or f"HTTP {response.status_code}"
    raise ProviderDeclined(f"PayPal: {message}", decline_code=issue or name or str(response.status_code))


def _capture_of(order: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for unit in order.get("purchase_units") or []:
        captures = (unit.get("payments") or {}).get("captures") or []
        if captures:
            capture: Mapping[str, Any] = captures[0]
            return capture
    return None


def _order_payment(order: Mapping[str, Any]) -> ProviderPayment:
    if order.get("status") == "DECLINED":  # our marker for a capture refused with INSTRUMENT_DECLINED
        return ProviderPayment(
            reference=order["id"],
            status="failed",
            failure_code=order["decline"],
            failure_message=order.get("message"),
            raw=order,
        )
    status = _ORDER_STATUS.get(order.get("status") or "", "pending")
    units = order.get("purchase_units") or [{}]
    amount_field = units[0].get("amount") or {}
    currency = amount_field.get("currency_code")
    amount = from_decimal(amount_field["value"], currency) if currency else None
    capture = _capture_of(order)
    fee = None
    if capture is not None:
        status = _CAPTURE_STATUS.get(capture.get("status") or "", status)
        currency = capture["amount"]["currency_code"]
        amount = from_decimal(capture["amount"]["value"], currency)
        paypal_fee = (capture.get("seller_receivable_breakdown") or {}).get("paypal_fee")
        fee = from_decimal(paypal_fee["value"], paypal_fee["currency_code"]) if paypal_fee else None
    next_action = None
    if status == "requires_action":
        link = next(
            (lk["href"] for lk in order.get("links") or [] if lk.get("rel") in ("payer-action", "approve")),
            None,
        )
        next_action = NextAction(type="redirect", url=link) if link else None
    failure = (capture or {}).get("status_details", {}).get("reason") if status == "failed" else None
    return ProviderPayment(
        reference=order["id"],
        status=status,
        amount=amount,
        currency=currency,
        next_action=next_action,
        failure_code=failure,
        fee=fee,
        raw=order,
    )


def _batch_payout(batch: Mapping[str, Any]) -> ProviderPayout:
    header_ = batch.get("batch_header") or {}
    items = batch.get("items") or []
    if items:
        item = items[0]
        status = _PAYOUT_ITEM_STATUS.get(item.get("transaction_status") or "", "pending")
        error = (item.get("errors") or {}).get("message") if status == "failed" else None
        return ProviderPayout(
            reference=header_["payout_batch_id"],
            status=status,
            failure_message=error
            or (f"PayPal: {item.get('transaction_status')}" if status == "failed" else None),
            raw=batch,
        )
    batch_status = header_.get("batch_status")
    status = "failed" if batch_status in ("DENIED", "CANCELED") else "pending"
    return ProviderPayout(
        reference=header_["payout_batch_id"],
        status=status,
        failure_message=f"PayPal: batch {batch_status}" if status == "failed" else None,
        raw=batch,
    )


def _settlement(info: Mapping[str, Any]) -> SettlementRecord | None:
    code = str(info.get("transaction_event_code") or "")
    kind: SettlementKind
    if code.startswith("T11"):
        kind = "refund"
    elif code in ("T0000", "T0001"):  # PayPal-to-PayPal and mass payments (Payouts)
        kind = "payout"
    elif code.startswith("T00"):
        kind = "payment"
    else:
        return None
    money = info["transaction_amount"]
    currency = money["currency_code"]
    fee = info.get("fee_amount")
    return SettlementRecord(
        reference=str(info["transaction_id"]),
        kind=kind,
        amount=abs(from_decimal(money["value"], currency)),
        currency=currency,
        fee=abs(from_decimal(fee["value"], currency)) if fee else 0,
        occurred_at=datetime.fromisoformat(str(info["transaction_initiation_date"]).replace("Z", "+00:00")),
        merchant_reference=info.get("custom_field") or None,
    )


def _event(event: Mapping[str, Any]) -> WebhookEvent:
    event_type = str(event["event_type"])
    resource: Mapping[str, Any] = event.get("resource") or {}
    common: dict[str, Any] = {"event_id": str(event["id"]), "type": event_type, "raw": event}
    money = resource.get("amount") or {}
    currency: str | None = money.get("currency_code") or money.get("currency")
    amount = from_decimal(money["value"], currency) if currency and money.get("value") is not None else None
    if event_type in _PAYMENT_EVENTS:
        order_id = (
            resource["id"]
            if event_type == "CHECKOUT.ORDER.APPROVED"
            else ((resource.get("supplementary_data") or {}).get("related_ids") or {}).get("order_id")
        )
        reason = (resource.get("status_details") or {}).get("reason")
        return WebhookEvent(
            **common,
            kind="payment",
            status=_PAYMENT_EVENTS[event_type],
            payment_reference=order_id,
            amount=amount,
            currency=currency,
            failure_code=reason if _PAYMENT_EVENTS[event_type] == "failed" else None,
        )
    if event_type == "PAYMENT.CAPTURE.REFUNDED":
        return WebhookEvent(
            **common,
            kind="refund",
            status=_REFUND_STATUS.get(str(resource.get("status")), "pending"),
            refund_reference=resource["id"],
            amount=amount,
            currency=currency,
        )
    if event_type.startswith("PAYMENT.PAYOUTS-ITEM."):
        item = resource.get("payout_item") or {}
        money = item.get("amount") or {}
        currency = money.get("currency")
        status = _PAYOUT_ITEM_STATUS.get(resource.get("transaction_status") or "", "pending")
        error = (resource.get("errors") or {}).get("message")
        return WebhookEvent(
            **common,
            kind="payout",
            status=status,
            payout_reference=resource["payout_batch_id"],
            amount=from_decimal(money["value"], currency) if currency else None,
            currency=currency,
            failure_message=error if status == "failed" else None,
        )
    if event_type == "PAYMENT.PAYOUTSBATCH.DENIED":
        batch = resource.get("batch_header") or {}
        return WebhookEvent(
            **common,
            kind="payout",
            status="failed",
            payout_reference=batch.get("payout_batch_id"),
            failure_message="PayPal denied the payout batch",
        )
    return WebhookEvent(**common)
