"""The built-in ``sandbox`` provider: a fake card processor that needs no account.

It behaves like a hosted-checkout provider (modelled on Stripe's test mode,
https://docs.stripe.com/testing): ``create_payment`` answers ``requires_action`` with a redirect to its own
checkout page (``emanet/providers/router.py``); the payer types a test card there; the sandbox decides the
outcome from the card, announces it with a webhook signed by the Standard Webhooks scheme
(https://www.standardwebhooks.com/, ``standardwebhooks`` library, key ``settings.sandbox_webhook_secret``)
to ``{sandbox_callback_base or public_url}/api/v1/webhooks/sandbox``, and sends the browser back to the
return URL with ``?payment_id=…&status=…``.

Test cards (the outcome is decided by the last four digits, so saved cards behave the same):
``4242 4242 4242 4242`` succeeds; ``4000 0000 0000 0002`` is declined (``card_declined``);
``4000 0000 0000 9995`` fails with ``insufficient_funds``; ``4000 0000 0000 3220`` asks for a 3-D Secure
code: ``123456`` passes, anything else fails (``three_d_secure_failed``). Any other Luhn-valid number
succeeds. The card number and CVC live only in the request that submits them: the sandbox keeps the brand,
last four digits, expiry and — when the payer saves the card — a ``tok_sandbox_…`` token.

Payouts settle ``settings.sandbox_payout_settle_seconds`` after they are created (job
``sandbox.settle_payout``): a destination whose account identifier (IBAN, account number, VPA, e-mail,
account id) ends in ``0000`` fails as a closed account, every other one is paid; both are announced by
webhook (``payout.paid`` / ``payout.failed``). Refunds succeed at once (up to the unrefunded amount) and are
announced by ``refund.succeeded``. The sandbox charges a 2.9 % fee on successful payments.

Webhook event types: ``payment.succeeded``, ``payment.failed``, ``refund.succeeded``, ``payout.paid``,
``payout.failed``; ``webhook-id`` is stable per event, so redeliveries deduplicate.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks import Webhook

from emanet.core import clock
from emanet.core.db import Database, new_id
from emanet.core.errors import NotFound
from emanet.core.money import format_amount, known_currencies, percentage_of
from emanet.core.outbox import enqueue
from emanet.core.tasks import JobContext, job
from emanet.providers.base import (
    CardDetails,
    CreatePayment,
    InvalidWebhookSignature,
    NextAction,
    PaymentProvider,
    PayoutDestination,
    ProviderDeclined,
    ProviderNotConfigured,
    ProviderPayment,
    ProviderPayout,
    ProviderRefund,
    ProviderUnavailable,
    SettlementRecord,
    WebhookEvent,
    constant_time_equals,
    header,
)
from emanet.providers.http import provider_client, request
from emanet.providers.models import SandboxCard, SandboxCharge, SandboxPayout, SandboxRefund

log = structlog.get_logger("emanet.providers.sandbox")

FEE_BASIS_POINTS = 290
THREE_D_SECURE_CODE = "123456"
WEBHOOK_PATH = "/api/v1/webhooks/sandbox"
DELIVER_WEBHOOK_JOB = "sandbox.deliver_webhook"
SETTLE_PAYOUT_JOB = "sandbox.settle_payout"


@dataclass(frozen=True)
class TestCard:
    number: str
    outcome: str


TEST_CARDS = (
    TestCard("4242 4242 4242 4242", "Succeeds"),
    TestCard("4000 0000 0000 0002", "Declined: card_declined"),
    TestCard("4000 0000 0000 9995", "Declined: insufficient_funds"),
    TestCard("4000 0000 0000 3220", f"3-D Secure: code {THREE_D_SECURE_CODE} passes, any other code fails"),
)
# Outcome by last four digits: a decline (code, message), or the 3-D Secure step.
_DECLINES = {
    "0002": ("card_declined", "Your card was declined."),
    "9995": ("insufficient_funds", "Your card has insufficient funds."),
}
_THREE_D_SECURE_LAST4 = "3220"
_THREE_D_SECURE_FAILED = ("three_d_secure_failed", "The 3-D Secure authentication failed.")


# ------------------------------------------------------------------------------------- card input
class CardInputError(ValueError):
    """The typed card is not usable; the message is shown on the checkout page."""


@dataclass(frozen=True)
class CardInput:
    """What the sandbox keeps of a typed card: never the number or the CVC."""

    brand: str
    last4: str
    exp_month: int
    exp_year: int


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check digit test."""
    if not digits.isdigit():
        return False
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def card_brand(digits: str) -> str:
    """The card scheme from the leading digits (IIN ranges)."""
    two, four = int(digits[:2]), int(digits[:4])
    if digits.startswith("4"):
        return "visa"
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "mastercard"
    if two in (34, 37):
        return "amex"
    if digits.startswith("9792"):
        return "troy"
    if digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649:
        return "discover"
    if digits.startswith("35"):
        return "jcb"
    return "unknown"


def read_card(number: str, expiry: str, cvc: str, today: date) -> CardInput:
    digits = re.sub(r"[\s-]", "", number)
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        raise CardInputError("Enter the card number (12 to 19 digits).")
    if not luhn_valid(digits):
        raise CardInputError("That card number is not valid.")
    match = re.fullmatch(r"\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*", expiry)
    if not match or not 1 <= int(match.group(1)) <= 12:
        raise CardInputError("Enter the expiry date as MM/YY.")
    month, year = int(match.group(1)), int(match.group(2))
    year = year + 2000 if year < 100 else year
    if (year, month) < (today.year, today.month):
        raise CardInputError("The card has expired.")
    if not re.fullmatch(r"\d{3,4}", cvc.strip()):
        raise CardInputError("Enter the 3 or 4 digit security code (CVC).")
    return CardInput(brand=card_brand(digits), last4=digits[-4:], exp_month=month, exp_year=year)


# ------------------------------------------------------------------------------------- checkout page
@dataclass(frozen=True)
class CheckoutView:
    """What the checkout template shows."""

    reference: str
    payment_id: str
    amount: str
    description: str
    step: Literal["card", "three_d_secure", "done"]
    status: str
    card: str | None = None  # "visa •••• 3220"
    error: str | None = None
    return_to: str | None = None
    test_cards: tuple[TestCard, ...] = TEST_CARDS


@dataclass(frozen=True)
class CheckoutResult:
    """Either a page to show (``view``; ``view.error`` set means the input was refused) or a redirect."""

    view: CheckoutView | None = None
    redirect_to: str | None = None


def _return_url(charge: SandboxCharge) -> str:
    parts = urlsplit(charge.return_url)
    query = [
        *parse_qsl(parts.query, keep_blank_values=True),
        ("payment_id", charge.payment_id),
        ("status", charge.status),
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _view(charge: SandboxCharge, error: str | None = None) -> CheckoutView:
    if charge.status != "requires_action":
        step: Literal["card", "three_d_secure", "done"] = "done"
    else:
        step = "three_d_secure" if charge.three_d_secure_pending else "card"
    card = f"{charge.card_brand} •••• {charge.card_last4}" if charge.card_last4 else None
    return CheckoutView(
        reference=charge.id,
        payment_id=charge.payment_id,
        amount=format_amount(charge.amount, charge.currency),
        description=charge.description,
        step=step,
        status=charge.status,
        card=card,
        error=error,
        return_to=_return_url(charge) if step == "done" else None,
    )


# ------------------------------------------------------------------------------------- the provider
class SandboxProvider(PaymentProvider):
    name = "sandbox"
    display_name = "Sandbox"
    supported_currencies = known_currencies()
    supports_payouts = True
    supports_saved_cards = True

    @property
    def db(self) -> Database:
        if self.database is None:
            raise ProviderNotConfigured("The sandbox provider keeps its ledger in the database; pass one")
        return self.database

    def methods(self, currency: str, country: str | None = None) -> list[str]:
        return ["card"] if self.supports_currency(currency) else []

    # ---- payments
    async def create_payment(self, req: CreatePayment) -> ProviderPayment:
        if req.amount <= 0:
            raise ProviderDeclined("The amount must be positive", decline_code="invalid_amount")
        if not self.supports_currency(req.currency):
            raise ProviderDeclined(
                f"Currency {req.currency} is not supported", decline_code="invalid_currency"
            )
        if urlsplit(req.return_url).scheme not in ("http", "https"):
            raise ProviderDeclined("The return URL must be http(s)", decline_code="invalid_return_url")
        try:
            async with self.db.transaction() as session:
                charge = await self._charge_by_payment_id(session, req.payment_id)
                if charge is None:
                    charge = await self._new_charge(session, req)
        except IntegrityError:
            # A concurrent create with the same payment_id won the insert: answer with its charge.
            async with self.db.transaction() as session:
                charge = await self._charge_by_payment_id(session, req.payment_id)
            if charge is None:
                raise
        return self._payment(charge)

    async def get_payment(self, reference: str) -> ProviderPayment:
        async with self.db.transaction() as session:
            charge = await session.get(SandboxCharge, reference)
            if charge is None:
                raise ProviderDeclined(f"No sandbox payment {reference}", decline_code="resource_missing")
        return self._payment(charge)

    async def _charge_by_payment_id(self, session: AsyncSession, payment_id: str) -> SandboxCharge | None:
        charge: SandboxCharge | None = await session.scalar(
            select(SandboxCharge).where(SandboxCharge.payment_id == payment_id)
        )
        return charge

    async def _new_charge(self, session: AsyncSession, req: CreatePayment) -> SandboxCharge:
        charge = SandboxCharge(
            id=new_id("ch_sandbox"),
            payment_id=req.payment_id,
            amount=req.amount,
            currency=req.currency,
            description=req.description[:500],
            return_url=req.return_url,
            status="requires_action",
            save_card=req.save_card,
            metadata_=dict(req.metadata),
            three_d_secure_pending=False,
            fee=0,
            refunded_amount=0,
        )
        if req.saved_card_token:
            card = await session.get(SandboxCard, req.saved_card_token)
            if card is None:
                raise ProviderDeclined("No such saved card", decline_code="invalid_card_token")
            charge.card_brand, charge.card_last4 = card.brand, card.last4
            charge.card_exp_month, charge.card_exp_year = card.exp_month, card.exp_year
            charge.card_token = card.token
            charge.save_card = False  # already saved
        session.add(charge)
        await session.flush()
        if req.saved_card_token:
            # A merchant-initiated charge on a saved card: decided now, announced by webhook (job).
            if charge.card_last4 == _THREE_D_SECURE_LAST4:
                charge.three_d_secure_pending = True
            else:
                await self._decide(session, charge)
                await self._enqueue_webhook(session, *_payment_event(charge))
        return charge

    def _payment(self, charge: SandboxCharge) -> ProviderPayment:
        next_action = None
        if charge.status == "requires_action":
            base = self.settings.public_url.rstrip("/")
            next_action = NextAction(type="redirect", url=f"{base}/sandbox/checkout/{charge.id}")
        return ProviderPayment(
            reference=charge.id,
            status=charge.status,  # type: ignore[arg-type]
            amount=charge.amount,
            currency=charge.currency,
            next_action=next_action,
            failure_code=charge.failure_code,
            failure_message=charge.failure_message,
            card=_card(charge),
            fee=charge.fee if charge.succeeded_at is not None else None,
            raw=_charge_data(charge),
        )

    # ---- the checkout page (called by emanet/providers/router.py)
    async def checkout_view(self, reference: str) -> CheckoutView:
        async with self.db.transaction() as session:
            charge = await session.get(SandboxCharge, reference)
            if charge is None:
                raise NotFound("No such sandbox checkout")
            return _view(charge)

    async def submit_card(self, reference: str, number: str, expiry: str, cvc: str) -> CheckoutResult:
        """The payer submitted the card form. The number and CVC are used here and dropped."""
        try:
            card = read_card(number, expiry, cvc, clock.now().date())
        except CardInputError as exc:
            return CheckoutResult(view=_view(await self._charge(reference), error=str(exc)))
        async with self.db.transaction() as session:
            charge = await self._locked_charge(session, reference)
            if charge.status != "requires_action" or charge.three_d_secure_pending:
                # Submitted twice (double click, back button): show where it stands.
                return CheckoutResult(
                    redirect_to=_return_url(charge)
                    if charge.status != "requires_action"
                    else f"/sandbox/checkout/{charge.id}"
                )
            charge.card_brand, charge.card_last4 = card.brand, card.last4
            charge.card_exp_month, charge.card_exp_year = card.exp_month, card.exp_year
            if card.last4 == _THREE_D_SECURE_LAST4:
                charge.three_d_secure_pending = True
                return CheckoutResult(redirect_to=f"/sandbox/checkout/{charge.id}")
            await self._decide(session, charge)
        await self._announce_after_checkout(charge)
        return CheckoutResult(redirect_to=_return_url(charge))

    async def submit_three_d_secure(self, reference: str, code: str) -> CheckoutResult:
        async with self.db.transaction() as session:
            charge = await self._locked_charge(session, reference)
            if charge.status != "requires_action" or not charge.three_d_secure_pending:
                return CheckoutResult(
                    redirect_to=_return_url(charge)
                    if charge.status != "requires_action"
                    else f"/sandbox/checkout/{charge.id}"
                )
            charge.three_d_secure_pending = False
            passed = constant_time_equals(THREE_D_SECURE_CODE, code.strip())
            await self._decide(session, charge, failure=None if passed else _THREE_D_SECURE_FAILED)
        await self._announce_after_checkout(charge)
        return CheckoutResult(redirect_to=_return_url(charge))

    async def _charge(self, reference: str) -> SandboxCharge:
        async with self.db.transaction() as session:
            charge = await session.get(SandboxCharge, reference)
            if charge is None:
                raise NotFound("No such sandbox checkout")
            return charge

    async def _locked_charge(self, session: AsyncSession, reference: str) -> SandboxCharge:
        charge = await session.scalar(
            select(SandboxCharge).where(SandboxCharge.id == reference).with_for_update()
        )
        if charge is None:
            raise NotFound("No such sandbox checkout")
        return charge

    async def _decide(
        self, session: AsyncSession, charge: SandboxCharge, failure: tuple[str, str] | None = None
    ) -> None:
        """Settle a charge whose card is known: the decline table first, then ``failure``, else success."""
        failure = _DECLINES.get(charge.card_last4 or "") or failure
        if failure:
            charge.status = "failed"
            charge.failure_code, charge.failure_message = failure
        else:
            charge.status = "succeeded"
            charge.fee = percentage_of(charge.amount, FEE_BASIS_POINTS)
            charge.succeeded_at = clock.now()
            if charge.save_card and charge.card_token is None:
                token = SandboxCard(
                    token=new_id("tok_sandbox"),
                    brand=charge.card_brand or "unknown",
                    last4=charge.card_last4 or "",
                    exp_month=charge.card_exp_month or 0,
                    exp_year=charge.card_exp_year or 0,
                )
                session.add(token)
                await session.flush()
                charge.card_token = token.token
        log.info(
            "sandbox_payment_decided",
            reference=charge.id,
            payment_id=charge.payment_id,
            status=charge.status,
            failure_code=charge.failure_code,
        )

    async def _announce_after_checkout(self, charge: SandboxCharge) -> None:
        """Call the merchant's webhook now (the browser waits for it, as with real hosted pages); if that
        fails, a durable job keeps trying."""
        msg_id, body = _payment_event(charge)
        try:
            await self.deliver_webhook(msg_id, body)
        except (ProviderUnavailable, WebhookDeliveryFailed) as exc:
            log.warning("sandbox_webhook_deferred", msg_id=msg_id, error=str(exc))
            async with self.db.transaction() as session:
                await self._enqueue_webhook(session, msg_id, body)

    # ---- webhooks out
    def callback_url(self) -> str:
        return (self.settings.sandbox_callback_base or self.settings.public_url).rstrip("/") + WEBHOOK_PATH

    async def deliver_webhook(self, msg_id: str, body: str) -> None:
        """POST one signed event to the merchant; raises unless it answers 2xx."""
        now = clock.now()
        signature = Webhook(self.settings.sandbox_webhook_secret).sign(msg_id, now, body)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(math.floor(now.timestamp())),
            "webhook-signature": signature,
            "content-type": "application/json",
        }
        url = self.callback_url()
        async with provider_client(self.settings, url) as client:
            # One attempt: retries are the delivery job's, with the worker's backoff.
            response = await request(
                client,
                "sandbox",
                self.settings,
                "POST",
                url,
                idempotent=False,
                content=body.encode(),
                headers=headers,
            )
        if not response.is_success:
            raise WebhookDeliveryFailed(f"{url} answered {response.status_code}")
        log.info("sandbox_webhook_delivered", msg_id=msg_id, status_code=response.status_code)

    async def _enqueue_webhook(self, session: AsyncSession, msg_id: str, body: str) -> None:
        await enqueue(session, DELIVER_WEBHOOK_JOB, {"msg_id": msg_id, "body": body})

    # ---- webhooks in
    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, remote_ip: str | None = None
    ) -> WebhookEvent:
        """Standard Webhooks verification: ``v1`` HMAC-SHA256 over ``{id}.{timestamp}.{body}`` computed with
        ``standardwebhooks.Webhook.sign``, compared in constant time, and the timestamp checked against
        ``emanet.core.clock`` (the library's ``verify`` reads the wall clock, which tests freeze)."""
        self.check_remote_ip(remote_ip)
        msg_id = header(headers, "webhook-id")
        timestamp = header(headers, "webhook-timestamp")
        signatures = header(headers, "webhook-signature")
        if not (msg_id and timestamp and signatures):
            raise InvalidWebhookSignature("Missing webhook-id, webhook-timestamp or webhook-signature")
        try:
            signed_at = int(timestamp)
            text = body.decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidWebhookSignature("Malformed webhook timestamp or body") from exc
        self.check_timestamp(signed_at)
        expected = Webhook(self.settings.sandbox_webhook_secret).sign(
            msg_id, datetime.fromtimestamp(signed_at, UTC), text
        )
        expected_bytes = base64.b64decode(expected.split(",", 1)[1])
        if not any(_matches_v1(candidate, expected_bytes) for candidate in signatures.split()):
            raise InvalidWebhookSignature("No matching webhook signature")
        try:
            event = orjson.loads(body)
            return _parse_event(msg_id, event)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidWebhookSignature("The webhook body is not a sandbox event") from exc

    # ---- refunds
    async def refund(
        self, reference: str, amount: int, currency: str, *, idempotency_key: str
    ) -> ProviderRefund:
        async with self.db.transaction() as session:
            charge = await session.scalar(
                select(SandboxCharge).where(SandboxCharge.id == reference).with_for_update()
            )
            if charge is None:
                raise ProviderDeclined(f"No sandbox payment {reference}", decline_code="resource_missing")
            existing = await session.scalar(
                select(SandboxRefund).where(SandboxRefund.idempotency_key == idempotency_key)
            )
            if existing is not None:
                if existing.charge_id != reference or existing.amount != amount:
                    raise ProviderDeclined(
                        "The idempotency key was used for another refund",
                        decline_code="idempotency_key_reused",
                    )
                return _refund(existing)
            if charge.status not in ("succeeded", "partially_refunded"):
                raise ProviderDeclined(
                    f"A {charge.status} payment cannot be refunded", decline_code="charge_not_refundable"
                )
            if currency != charge.currency:
                raise ProviderDeclined(
                    "The refund currency differs from the payment's", decline_code="currency_mismatch"
                )
            if not 0 < amount <= charge.amount - charge.refunded_amount:
                raise ProviderDeclined(
                    "The refund amount exceeds what is left to refund", decline_code="amount_too_large"
                )
            refund = SandboxRefund(
                id=new_id("re_sandbox"),
                charge_id=charge.id,
                idempotency_key=idempotency_key,
                amount=amount,
                currency=currency,
                status="succeeded",
            )
            session.add(refund)
            charge.refunded_amount += amount
            charge.status = "refunded" if charge.refunded_amount == charge.amount else "partially_refunded"
            await session.flush()
            await self._enqueue_webhook(session, *_refund_event(refund, charge))
        return _refund(refund)

    # ---- payouts
    async def create_payout(
        self, payout_id: str, amount: int, currency: str, destination: PayoutDestination
    ) -> ProviderPayout:
        identifier = _destination_identifier(destination)
        if amount <= 0:
            raise ProviderDeclined("The payout amount must be positive", decline_code="invalid_amount")
        if not self.supports_currency(currency):
            raise ProviderDeclined(f"Currency {currency} is not supported", decline_code="invalid_currency")
        by_payout_id = select(SandboxPayout).where(SandboxPayout.payout_id == payout_id)
        try:
            async with self.db.transaction() as session:
                payout = await session.scalar(by_payout_id)
                if payout is None:
                    settles_at = clock.now() + timedelta(seconds=self.settings.sandbox_payout_settle_seconds)
                    payout = SandboxPayout(
                        id=new_id("po_sandbox"),
                        payout_id=payout_id,
                        amount=amount,
                        currency=currency,
                        destination_type=str(destination.get("type") or "bank_account")[:20],
                        destination_last4=identifier[-4:],
                        status="processing",
                        settles_at=settles_at,
                    )
                    session.add(payout)
                    await session.flush()
                    await enqueue(session, SETTLE_PAYOUT_JOB, {"reference": payout.id}, run_at=settles_at)
        except IntegrityError:
            async with self.db.transaction() as session:
                payout = await session.scalar(by_payout_id)
            if payout is None:
                raise
        return _payout(payout)

    async def get_payout(self, reference: str) -> ProviderPayout:
        return _payout(await self.settle_payout(reference, force=False))

    async def settle_payout(self, reference: str, *, force: bool) -> SandboxPayout:
        """The fake bank's settlement run: pays or fails a processing payout once it is due (or now,
        with ``force``). Safe to run twice."""
        async with self.db.transaction() as session:
            payout = await session.scalar(
                select(SandboxPayout).where(SandboxPayout.id == reference).with_for_update()
            )
            if payout is None:
                raise ProviderDeclined(f"No sandbox payout {reference}", decline_code="resource_missing")
            if payout.status == "processing" and (force or clock.now() >= payout.settles_at):
                if payout.destination_last4 == "0000":
                    payout.status = "failed"
                    payout.failure_message = "The receiving account is closed"
                else:
                    payout.status = "paid"
                payout.settled_at = clock.now()
                log.info("sandbox_payout_settled", reference=payout.id, status=payout.status)
            return payout

    # ---- reconciliation
    async def list_settlements(self, day: date) -> list[SettlementRecord]:
        start = datetime.combine(day, time.min, UTC)
        end = start + timedelta(days=1)
        async with self.db.transaction() as session:
            charges = (
                await session.scalars(
                    select(SandboxCharge).where(
                        SandboxCharge.succeeded_at >= start, SandboxCharge.succeeded_at < end
                    )
                )
            ).all()
            refunds = (
                await session.scalars(
                    select(SandboxRefund).where(
                        SandboxRefund.status == "succeeded",
                        SandboxRefund.created_at >= start,
                        SandboxRefund.created_at < end,
                    )
                )
            ).all()
            payouts = (
                await session.scalars(
                    select(SandboxPayout).where(
                        SandboxPayout.status == "paid",
                        SandboxPayout.settled_at >= start,
                        SandboxPayout.settled_at < end,
                    )
                )
            ).all()
        records = [
            SettlementRecord(c.id, "payment", c.amount, c.currency, c.fee, c.succeeded_at or start)
            for c in charges
        ]
        records += [SettlementRecord(r.id, "refund", r.amount, r.currency, 0, r.created_at) for r in refunds]
        records += [
            SettlementRecord(p.id, "payout", p.amount, p.currency, 0, p.settled_at or start) for p in payouts
        ]
        return sorted(records, key=lambda record: (record.occurred_at, record.reference))


class WebhookDeliveryFailed(Exception):
    """The merchant's webhook endpoint answered something other than 2xx."""


# ------------------------------------------------------------------------------------- events
def _card(charge: SandboxCharge) -> CardDetails | None:
    if not charge.card_last4:
        return None
    return CardDetails(
        brand=charge.card_brand or "unknown",
        last4=charge.card_last4,
        exp_month=charge.card_exp_month,
        exp_year=charge.card_exp_year,
        token=charge.card_token,
    )


def _charge_data(charge: SandboxCharge) -> dict[str, Any]:
    card = _card(charge)
    return {
        "object": "charge",
        "reference": charge.id,
        "payment_id": charge.payment_id,
        "amount": charge.amount,
        "currency": charge.currency,
        "status": charge.status,
        "failure_code": charge.failure_code,
        "failure_message": charge.failure_message,
        "fee": charge.fee,
        "refunded_amount": charge.refunded_amount,
        "card": None
        if card is None
        else {
            "brand": card.brand,
            "last4": card.last4,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "token": card.token,
        },
    }


def _event_body(event_type: str, data: dict[str, Any]) -> str:
    return orjson.dumps({"type": event_type, "timestamp": clock.now().isoformat(), "data": data}).decode()


def _payment_event(charge: SandboxCharge) -> tuple[str, str]:
    event_type = "payment.succeeded" if charge.status == "succeeded" else "payment.failed"
    return f"msg_{charge.id}_{charge.status}", _event_body(event_type, _charge_data(charge))


def _refund_event(refund: SandboxRefund, charge: SandboxCharge) -> tuple[str, str]:
    data = {
        "object": "refund",
        "reference": refund.id,
        "charge": charge.id,
        "payment_id": charge.payment_id,
        "amount": refund.amount,
        "currency": refund.currency,
        "status": refund.status,
    }
    return f"msg_{refund.id}_{refund.status}", _event_body("refund.succeeded", data)


def _payout_event(payout: SandboxPayout) -> tuple[str, str]:
    data = {
        "object": "payout",
        "reference": payout.id,
        "payout_id": payout.payout_id,
        "amount": payout.amount,
        "currency": payout.currency,
        "status": payout.status,
        "failure_message": payout.failure_message,
    }
    return f"msg_{payout.id}_{payout.status}", _event_body(f"payout.{payout.status}", data)


def _matches_v1(candidate: str, expected: bytes) -> bool:
    version, _, encoded = candidate.partition(",")
    if version != "v1":
        return False
    try:
        received = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return False
    return constant_time_equals(expected, received)


def _parse_event(msg_id: str, event: dict[str, Any]) -> WebhookEvent:
    event_type = str(event["type"])
    data: dict[str, Any] = event["data"]
    common: dict[str, Any] = {
        "event_id": msg_id,
        "type": event_type,
        "raw": event,
        "amount": data.get("amount"),
        "currency": data.get("currency"),
    }
    if event_type in ("payment.succeeded", "payment.failed"):
        card = data.get("card")
        return WebhookEvent(
            **common,
            kind="payment",
            status=event_type.split(".")[1],
            payment_reference=data["reference"],
            failure_code=data.get("failure_code"),
            failure_message=data.get("failure_message"),
            card=CardDetails(**card) if card else None,
            fee=data.get("fee") if event_type == "payment.succeeded" else None,
        )
    if event_type == "refund.succeeded":
        return WebhookEvent(
            **common,
            kind="refund",
            status="succeeded",
            refund_reference=data["reference"],
            payment_reference=data["charge"],
        )
    if event_type in ("payout.paid", "payout.failed"):
        return WebhookEvent(
            **common,
            kind="payout",
            status=event_type.split(".")[1],
            payout_reference=data["reference"],
            failure_message=data.get("failure_message"),
        )
    return WebhookEvent(**common)


def _refund(refund: SandboxRefund) -> ProviderRefund:
    return ProviderRefund(
        reference=refund.id,
        status=refund.status,  # type: ignore[arg-type]
        amount=refund.amount,
        raw={"object": "refund", "reference": refund.id, "charge": refund.charge_id},
    )


def _payout(payout: SandboxPayout) -> ProviderPayout:
    return ProviderPayout(
        reference=payout.id,
        status=payout.status,  # type: ignore[arg-type]
        failure_message=payout.failure_message,
        raw={
            "object": "payout",
            "reference": payout.id,
            "payout_id": payout.payout_id,
            "amount": payout.amount,
            "currency": payout.currency,
            "status": payout.status,
        },
    )


def _destination_identifier(destination: PayoutDestination) -> str:
    for key in ("iban", "account_number", "vpa", "email", "account_id"):
        value = destination.get(key)
        if isinstance(value, str) and value.strip():
            return re.sub(r"\s", "", value)
    raise ProviderDeclined(
        "The payout destination has no account identifier", decline_code="invalid_destination"
    )


# ------------------------------------------------------------------------------------- jobs
@job(DELIVER_WEBHOOK_JOB)
async def deliver_webhook_job(ctx: JobContext) -> None:
    """Retry a webhook the sandbox could not deliver at once; raising hands it to the worker's backoff."""
    provider = SandboxProvider(ctx.settings, ctx.database)
    await provider.deliver_webhook(ctx.payload["msg_id"], ctx.payload["body"])


@job(SETTLE_PAYOUT_JOB)
async def settle_payout_job(ctx: JobContext) -> None:
    """The fake bank settles a payout and announces it; a failed announcement is retried by the worker
    (the settlement itself is idempotent and the webhook id is stable)."""
    provider = SandboxProvider(ctx.settings, ctx.database)
    payout = await provider.settle_payout(ctx.payload["reference"], force=True)
    await provider.deliver_webhook(*_payout_event(payout))
