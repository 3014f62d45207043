"""One-time passwords over SMS (seed 001).

- 6-digit codes from ``secrets``; only ``HMAC-SHA256(secret key, id|phone|purpose|code)`` is stored and it
  is compared with ``hmac.compare_digest``; a code is bound to its purpose, so it never works for another;
- ``otp_ttl_seconds`` (5 min) to live, ``otp_max_attempts`` (3) wrong tries and the code is dead;
- one send a minute per phone; ``sms_hourly_cap_per_account`` SMS an hour per account;
- numbers normalised to E.164 with ``phonenumbers``; an admin-managed blocklist of numbers and prefixes;
- after ``otp_captcha_after_failures`` failed checks on a phone, every send and check for it needs a CAPTCHA
  until a code is verified;
- every action is logged with the phone masked and never the code.

Failures that must still be remembered (a wrong attempt, a failed SMS) are returned as an ``OtpFailure``
instead of raised, so the request's transaction commits them; the router turns them into problem responses.

Purposes ``login`` and ``verify_phone`` are completed at /otp/verify. ``confirm_release`` and
``payout_change`` are step-up codes: /otp/verify proves the code (attempts counted there), then the action
calls ``check_otp`` with the same code, which accepts a verified, unexpired code once. ``check_otp`` never
accepts an unproven code, because a failed check inside another module's request would be rolled back
with that request and wrong guesses would go uncounted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import phonenumbers
import structlog
from sqlalchemy import and_, delete, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.auth import issue_access_token
from emanet.core.db import new_id, upsert
from emanet.core.errors import (
    Conflict,
    EmanetError,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    Unprocessable,
)
from emanet.core.settings import Settings, get_settings
from emanet.notifications import sms
from emanet.otp.captcha import build_verifier
from emanet.otp.models import BlockKind, ChallengeStatus, OtpChallenge, OtpPhoneState, OtpPurpose, PhoneBlock
from emanet.users.models import User, VerificationLevel
from emanet.users.service import create_user, normalize_phone

log = structlog.get_logger("emanet.otp")

SMS_TEMPLATES = {
    "tr": "{product} doğrulama kodunuz: {code}",
    "en": "Your {product} verification code: {code}",
    "ar": "رمز التحقق الخاص بك في {product}: {code}",
}
CODE_MASK = "******"
STEP_UP = frozenset({OtpPurpose.confirm_release, OtpPurpose.payout_change})
NEEDS_USER = frozenset({OtpPurpose.verify_phone, *STEP_UP})
ARABIC_REGIONS = frozenset(
    {
        "SA",
        "AE",
        "EG",
        "JO",
        "KW",
        "QA",
        "BH",
        "OM",
        "MA",
        "DZ",
        "TN",
        "IQ",
        "LB",
        "LY",
        "SD",
        "YE",
        "SY",
        "PS",
        "MR",
    }
)
STATE_RETENTION = timedelta(hours=24)
CHALLENGE_RETENTION = timedelta(hours=24)


class CaptchaRequired(EmanetError):
    status, code = 403, "captcha_required"


@dataclass
class OtpFailure:
    """A refusal whose side effects (a counted attempt, a failed SMS) must be committed."""

    status: int
    code: str
    detail: str
    attempts_left: int | None = None


@dataclass
class VerifyResult:
    challenge: OtpChallenge
    user: User | None = None
    access_token: str | None = None


def mask_phone(phone: str) -> str:
    return phone[:6] + "*" * max(0, len(phone) - 8) + phone[-2:] if len(phone) > 8 else "***"


def code_digest(settings: Settings, challenge_id: str, phone: str, purpose: str, code: str) -> str:
    message = f"{challenge_id}|{phone}|{purpose}|{code}".encode()
    return hmac.new(settings.secret_key.encode(), message, hashlib.sha256).hexdigest()


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def sms_locale(phone: str, requested: str | None, user: User | None) -> str:
    if requested in SMS_TEMPLATES:
        return str(requested)
    if user is not None and user.locale in SMS_TEMPLATES:
        return user.locale
    region = phonenumbers.region_code_for_number(phonenumbers.parse(phone, None))
    return "tr" if region == "TR" else "ar" if region in ARABIC_REGIONS else "en"


# --- checks shared by send, verify and status ---------------------------------------------------------------


def _phone_for(purpose: OtpPurpose, raw_phone: str | None, user: User | None) -> str:
    """The number a code goes to: given (login, verify_phone) or the user's verified phone (step-up)."""
    if purpose in NEEDS_USER and user is None:
        raise Unauthorized(f"Sign in to use a code for {purpose}")
    if purpose in STEP_UP:
        assert user is not None
        if not user.phone or user.phone_verified_at is None:
            raise Conflict("Verify your phone number first", code="phone_not_verified")
        if raw_phone and normalize_phone(raw_phone) != user.phone:
            raise Unprocessable("Step-up codes go to the phone number on your account", code="phone_mismatch")
        return user.phone
    if not raw_phone:
        raise Unprocessable("phone is required", code="phone_required")
    return normalize_phone(raw_phone)


async def is_blocked(session: AsyncSession, phone: str) -> PhoneBlock | None:
    query = (
        select(PhoneBlock)
        .where(
            or_(
                PhoneBlock.pattern == phone,
                and_(PhoneBlock.kind == BlockKind.prefix, literal(phone).like(PhoneBlock.pattern + "%")),
            )
        )
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def _refuse_blocked(session: AsyncSession, phone: str, purpose: str, action: str) -> None:
    block = await is_blocked(session, phone)
    if block is not None:
        log.warning("otp_blocked", action=action, phone=mask_phone(phone), purpose=purpose, block_id=block.id)
        raise Forbidden("This phone number cannot receive codes", code="phone_blocked")


async def _lock_phone(session: AsyncSession, phone: str) -> OtpPhoneState:
    await session.execute(
        upsert(session, OtpPhoneState)
        .values(phone=phone, failed_verifications=0, updated_at=clock.now())
        .on_conflict_do_nothing(index_elements=["phone"])
    )
    state = (
        await session.execute(
            select(OtpPhoneState)
            .where(OtpPhoneState.phone == phone)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return state


def captcha_required(state: OtpPhoneState, settings: Settings) -> bool:
    return state.failed_verifications >= settings.otp_captcha_after_failures


async def _captcha_gate(
    state: OtpPhoneState,
    settings: Settings,
    token: str | None,
    remote_ip: str | None,
    action: str,
    purpose: str,
) -> None:
    if not captcha_required(state, settings):
        return
    verifier = build_verifier(settings)
    if not token or not await verifier.verify(token, remote_ip):
        log.warning(
            "otp_captcha_required",
            action=action,
            phone=mask_phone(state.phone),
            purpose=purpose,
            token_given=bool(token),
        )
        raise CaptchaRequired("Solve the CAPTCHA to continue", captcha_provider=verifier.name)


async def _latest(
    session: AsyncSession, phone: str, purpose: str, *, lock: bool = False
) -> OtpChallenge | None:
    query = (
        select(OtpChallenge)
        .where(OtpChallenge.phone == phone, OtpChallenge.purpose == purpose)
        .order_by(OtpChallenge.created_at.desc(), OtpChallenge.id.desc())
        .limit(1)
    )
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


def _expire_if_due(challenge: OtpChallenge) -> None:
    if (
        challenge.status in (ChallengeStatus.active, ChallengeStatus.verified)
        and challenge.expires_at <= clock.now()
    ):
        challenge.status = ChallengeStatus.expired


# --- send ---------------------------------------------------------------------------------------------------


async def send_code(
    session: AsyncSession,
    settings: Settings,
    *,
    purpose: OtpPurpose,
    phone: str | None,
    user: User | None,
    locale: str | None,
    captcha_token: str | None,
    remote_ip: str | None,
    resend: bool,
) -> tuple[OtpChallenge, OtpFailure | None]:
    """Create a code and text it. The SMS goes out inline (the code exists only in this call's memory)."""
    action = "resend" if resend else "send"
    target = _phone_for(purpose, phone, user)
    await _refuse_blocked(session, target, purpose, action)
    if purpose == OtpPurpose.verify_phone:
        assert user is not None
        owner = (await session.execute(select(User.id).where(User.phone == target))).scalar_one_or_none()
        if owner is not None and owner != user.id:
            raise Conflict("This phone number belongs to another account", code="phone_taken")
    state = await _lock_phone(session, target)
    await _captcha_gate(state, settings, captcha_token, remote_ip, action, purpose)
    now = clock.now()
    if state.last_sent_at is not None:
        wait = state.last_sent_at + timedelta(seconds=settings.otp_resend_interval_seconds) - now
        if wait > timedelta(0):
            seconds = max(1, int(wait.total_seconds() + 0.999))
            log.info(
                "otp_rate_limited",
                action=action,
                phone=mask_phone(target),
                purpose=purpose,
                retry_in_s=seconds,
            )
            raise RateLimited(
                f"A code was sent to this number recently; retry in {seconds} seconds",
                code="otp_rate_limited",
                headers={"Retry-After": str(seconds)},
            )
    previous = await _latest(session, target, purpose, lock=True)
    if resend and previous is None:
        raise NotFound(
            "No code was sent to this number for this purpose; send one first", code="nothing_to_resend"
        )
    account_key = user.id if user is not None else target
    locale_used = sms_locale(target, locale, user)
    template = SMS_TEMPLATES[locale_used]
    masked_text = template.format(product=settings.product_name, code=CODE_MASK)
    if not await sms.within_hourly_cap(session, settings, account_key):
        sms.record_sms(
            session,
            account_key=account_key,
            to=target,
            masked_text=masked_text,
            purpose=f"otp_{purpose}",
            user_id=user.id if user else None,
            rejected_reason="hourly SMS cap reached",
        )
        log.warning("otp_sms_cap_reached", action=action, phone=mask_phone(target), purpose=purpose)
        await session.flush()
        raise RateLimited(
            "The hourly SMS limit for this account is reached",
            code="sms_cap_reached",
            headers={"Retry-After": "3600"},
        )
    if previous is not None and previous.status in (ChallengeStatus.active, ChallengeStatus.verified):
        previous.status = ChallengeStatus.superseded
    code = new_code()
    challenge = OtpChallenge(
        id=new_id("otp"),
        phone=target,
        purpose=purpose,
        user_id=user.id if user else None,
        max_attempts=settings.otp_max_attempts,
        expires_at=now + timedelta(seconds=settings.otp_ttl_seconds),
        created_at=now,
    )
    challenge.code_hash = code_digest(settings, challenge.id, target, purpose, code)
    session.add(challenge)
    try:
        receipt = await sms.build_gateway(settings).send(
            target, template.format(product=settings.product_name, code=code)
        )
    except sms.SmsDeliveryFailed as failure:
        message = sms.record_sms(
            session,
            account_key=account_key,
            to=target,
            masked_text=masked_text,
            purpose=f"otp_{purpose}",
            user_id=user.id if user else None,
            failure=failure,
        )
        await session.flush()
        challenge.status = ChallengeStatus.send_failed
        challenge.sms_message_id = message.id
        log.error(
            "otp_send_failed",
            action=action,
            phone=mask_phone(target),
            purpose=purpose,
            challenge_id=challenge.id,
            error=str(failure),
        )
        return challenge, OtpFailure(502, "sms_failed", "The code could not be sent; try again shortly")
    message = sms.record_sms(
        session,
        account_key=account_key,
        to=target,
        masked_text=masked_text,
        purpose=f"otp_{purpose}",
        user_id=user.id if user else None,
        receipt=receipt,
    )
    await session.flush()
    challenge.sms_message_id = message.id
    state.last_sent_at = now
    state.updated_at = now
    await session.flush()
    log.info(
        "otp_sent",
        action=action,
        phone=mask_phone(target),
        purpose=purpose,
        challenge_id=challenge.id,
        provider=receipt.provider,
        locale=locale_used,
        expires_at=challenge.expires_at.isoformat(),
    )
    return challenge, None


# --- verify -------------------------------------------------------------------------------------------------


async def verify_code(
    session: AsyncSession,
    settings: Settings,
    *,
    purpose: OtpPurpose,
    phone: str | None,
    code: str,
    user: User | None,
    captcha_token: str | None,
    remote_ip: str | None,
) -> VerifyResult | OtpFailure:
    target = _phone_for(purpose, phone, user)
    await _refuse_blocked(session, target, purpose, "verify")
    state = await _lock_phone(session, target)
    await _captcha_gate(state, settings, captcha_token, remote_ip, "verify", purpose)
    challenge = await _latest(session, target, purpose, lock=True)
    if challenge is not None:
        _expire_if_due(challenge)
    fields = {"phone": mask_phone(target), "purpose": purpose}
    belongs = challenge is not None and (
        purpose not in NEEDS_USER or (user is not None and challenge.user_id == user.id)
    )
    if challenge is None or not belongs or challenge.status != ChallengeStatus.active:
        failure = _refusal_for(challenge if belongs else None)
        _count_failure(state)
        log.info(
            "otp_verify_refused",
            reason=failure.code,
            challenge_id=challenge.id if challenge else None,
            **fields,
        )
        return failure
    challenge.attempts += 1
    expected = challenge.code_hash
    given = code_digest(settings, challenge.id, target, purpose, code)
    if not hmac.compare_digest(expected, given):
        _count_failure(state)
        left = max(0, challenge.max_attempts - challenge.attempts)
        if left == 0:
            challenge.status = ChallengeStatus.exhausted
        log.info(
            "otp_verify_failed",
            challenge_id=challenge.id,
            attempts=challenge.attempts,
            attempts_left=left,
            **fields,
        )
        detail = "The code is not correct" if left else "The code is not correct; request a new one"
        return OtpFailure(422, "otp_invalid" if left else "otp_exhausted", detail, attempts_left=left)
    state.failed_verifications = 0
    state.updated_at = clock.now()
    challenge.verified_at = clock.now()
    result = VerifyResult(challenge=challenge)
    if purpose in STEP_UP:
        challenge.status = ChallengeStatus.verified
    else:
        challenge.status = ChallengeStatus.consumed
        challenge.consumed_at = clock.now()
        result.user = await _complete(session, settings, purpose, target, user)
        if purpose == OtpPurpose.login:
            result.access_token = issue_access_token(result.user, settings)
    await session.flush()
    log.info(
        "otp_verified", challenge_id=challenge.id, user_id=result.user.id if result.user else None, **fields
    )
    return result


def _refusal_for(challenge: OtpChallenge | None) -> OtpFailure:
    if challenge is None or challenge.status in (ChallengeStatus.superseded, ChallengeStatus.send_failed):
        return OtpFailure(422, "otp_invalid", "No valid code for this number and purpose; request one")
    if challenge.status == ChallengeStatus.expired:
        return OtpFailure(422, "otp_expired", "The code has expired; request a new one", attempts_left=0)
    if challenge.status == ChallengeStatus.exhausted:
        return OtpFailure(
            422, "otp_exhausted", "Too many wrong attempts; request a new code", attempts_left=0
        )
    return OtpFailure(
        409, "otp_already_used", "This code was already used; request a new one", attempts_left=0
    )


def _count_failure(state: OtpPhoneState) -> None:
    state.failed_verifications += 1
    state.updated_at = clock.now()


async def _complete(
    session: AsyncSession, settings: Settings, purpose: OtpPurpose, phone: str, user: User | None
) -> User:
    now = clock.now()
    if purpose == OtpPurpose.login:
        found = (await session.execute(select(User).where(User.phone == phone))).scalar_one_or_none()
        if found is None:
            found = await create_user(session, email=None, phone=phone, name="")
            log.info("user_created_by_otp_login", user_id=found.id)
        if found.is_suspended:
            raise Forbidden("This account is suspended", code="account_suspended")
        user = found
    assert user is not None
    user.phone = phone
    user.phone_verified_at = now
    if user.verification_level == VerificationLevel.none:
        user.verification_level = VerificationLevel.phone
    return user


async def check_otp(
    session: AsyncSession, user: User, purpose: str, code: str, *, settings: Settings | None = None
) -> None:
    """For other modules (release confirmation, payout destination change): accept ``code`` when it was
    verified at /otp/verify for this user and purpose, is unexpired and unused; use it up. Raises
    ``Unprocessable`` (code ``otp_required``) otherwise. Runs in the caller's transaction."""
    settings = settings or get_settings()
    if purpose not in STEP_UP:
        raise ValueError(f"check_otp is for step-up purposes, not {purpose!r}")
    refused = Unprocessable(f"A verified one-time code for {purpose} is required", code="otp_required")
    if not user.phone or not code:
        raise refused
    challenge = await _latest(session, user.phone, purpose, lock=True)
    if challenge is None or challenge.user_id != user.id:
        raise refused
    _expire_if_due(challenge)
    given = code_digest(settings, challenge.id, user.phone, purpose, code)
    if challenge.status != ChallengeStatus.verified or not hmac.compare_digest(challenge.code_hash, given):
        log.info(
            "otp_check_refused",
            phone=mask_phone(user.phone),
            purpose=purpose,
            challenge_id=challenge.id,
            status=challenge.status,
        )
        raise refused
    challenge.status = ChallengeStatus.consumed
    challenge.consumed_at = clock.now()
    await session.flush()
    log.info(
        "otp_consumed",
        phone=mask_phone(user.phone),
        purpose=purpose,
        challenge_id=challenge.id,
        user_id=user.id,
    )


# --- status -------------------------------------------------------------------------------------------------


@dataclass
class OtpStatus:
    phone: str
    purpose: str
    status: str
    expires_at: datetime | None
    attempts_left: int | None
    can_resend_at: datetime | None
    captcha_required: bool


async def status_of(
    session: AsyncSession, settings: Settings, *, purpose: OtpPurpose, phone: str | None, user: User | None
) -> OtpStatus:
    target = _phone_for(purpose, phone, user)
    challenge = await _latest(session, target, purpose)
    if challenge is not None and purpose in NEEDS_USER and (user is None or challenge.user_id != user.id):
        challenge = None
    state = await session.get(OtpPhoneState, target)
    can_resend_at = None
    if state is not None and state.last_sent_at is not None:
        can_resend_at = max(
            clock.now(), state.last_sent_at + timedelta(seconds=settings.otp_resend_interval_seconds)
        )
    status, expires_at, attempts_left = "none", None, None
    if challenge is not None:
        status = challenge.status
        if (
            status in (ChallengeStatus.active, ChallengeStatus.verified)
            and challenge.expires_at <= clock.now()
        ):
            status = ChallengeStatus.expired
        expires_at = challenge.expires_at
        attempts_left = (
            max(0, challenge.max_attempts - challenge.attempts) if status == ChallengeStatus.active else 0
        )
    return OtpStatus(
        phone=mask_phone(target),
        purpose=purpose,
        status=status,
        expires_at=expires_at,
        attempts_left=attempts_left,
        can_resend_at=can_resend_at,
        captcha_required=state is not None and captcha_required(state, settings),
    )


# --- blocklist (admin) --------------------------------------------------------------------------------------


def _normalise_pattern(pattern: str, kind: BlockKind) -> str:
    if kind == BlockKind.number:
        return normalize_phone(pattern)
    cleaned = pattern.replace(" ", "")
    if not (cleaned.startswith("+") and cleaned[1:].isdigit() and 2 <= len(cleaned) <= 16):
        raise Unprocessable("A prefix is '+' followed by 1 to 15 digits, e.g. +90850", code="invalid_prefix")
    return cleaned


async def add_block(
    session: AsyncSession, admin: User, *, pattern: str, kind: BlockKind, reason: str
) -> PhoneBlock:
    normalised = _normalise_pattern(pattern, kind)
    if (await session.execute(select(PhoneBlock.id).where(PhoneBlock.pattern == normalised))).first():
        raise Conflict("This number or prefix is already blocked", code="already_blocked")
    block = PhoneBlock(pattern=normalised, kind=kind, reason=reason, created_by=admin.id)
    session.add(block)
    await session.flush()
    log.info(
        "otp_block_added",
        block_id=block.id,
        kind=kind,
        pattern=mask_phone(normalised) if kind == BlockKind.number else normalised,
        admin_id=admin.id,
    )
    return block


async def list_blocks(session: AsyncSession) -> list[PhoneBlock]:
    return list(
        (await session.execute(select(PhoneBlock).order_by(PhoneBlock.created_at, PhoneBlock.id))).scalars()
    )


async def remove_block(session: AsyncSession, admin: User, block_id: str) -> PhoneBlock:
    block = await session.get(PhoneBlock, block_id)
    if block is None:
        raise NotFound("No such block")
    await session.delete(block)
    await session.flush()
    log.info("otp_block_removed", block_id=block_id, admin_id=admin.id)
    return block


# --- cleanup ------------------------------------------------------------------------------------------------


async def cleanup(session: AsyncSession) -> tuple[int, int]:
    """Forget challenges a day past their expiry and phone states quiet for a day (their CAPTCHA counters)."""
    now = clock.now()
    challenges = await session.execute(
        delete(OtpChallenge)
        .where(OtpChallenge.expires_at < now - CHALLENGE_RETENTION)
        .execution_options(synchronize_session=False)
    )
    states = await session.execute(
        delete(OtpPhoneState)
        .where(OtpPhoneState.updated_at < now - STATE_RETENTION)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(challenges, "rowcount", 0) or 0), int(getattr(states, "rowcount", 0) or 0)
