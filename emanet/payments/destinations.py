"""Payout destinations: validation (IBAN with ``schwifty``, national account formats) and masking.

A destination is a ``PayoutDestination`` dict (``emanet.providers.base``). Validation normalises it (compact
upper-case IBAN, digits only, country code from the IBAN) so the adapters get one shape. Countries that use
IBANs must use one; elsewhere the national format of the country is checked:

- India: account number 9-18 digits, IFSC ``AAAA0XXXXXX`` (RBI); UPI: ``name@bank`` VPA;
- Nigeria: 10-digit NUBAN, bank code 3-6 digits (CBN/Paystack codes);
- United States: account number 4-17 digits, ABA routing number with its check digit;
- United Kingdom: 8-digit account number, 6-digit sort code.
"""

from __future__ import annotations

import re
from typing import Any

from email_validator import EmailNotValidError, validate_email

from emanet.core.errors import Unprocessable
from emanet.providers.base import PayoutDestination

DESTINATION_TYPES = ("iban", "bank_account", "upi", "paypal", "stripe_account")
_VPA = re.compile(r"^[A-Za-z0-9.\-_]{2,256}@[A-Za-z][A-Za-z0-9]{1,63}$")
_STRIPE_ACCOUNT = re.compile(r"^acct_[A-Za-z0-9]{8,40}$")
_IFSC = re.compile(r"^[A-Z]{4}0[A-Z0-9]{6}$")
# country -> (account number pattern, bank code pattern, what the bank code is called)
_NATIONAL_FORMATS: dict[str, tuple[re.Pattern[str], re.Pattern[str], str]] = {
    "IN": (re.compile(r"^\d{9,18}$"), _IFSC, "IFSC"),
    "NG": (re.compile(r"^\d{10}$"), re.compile(r"^\d{3,6}$"), "bank code"),
    "US": (re.compile(r"^\d{4,17}$"), re.compile(r"^\d{9}$"), "routing number"),
    "GB": (re.compile(r"^\d{8}$"), re.compile(r"^\d{6}$"), "sort code"),
}


class InvalidDestination(Unprocessable):
    code = "invalid_payout_destination"


def _uses_iban(country: str) -> bool:
    from schwifty import registry  # lazy: schwifty's bank registry costs ~14 MB, only payouts need it
    from schwifty.exceptions import SchwiftyException

    try:
        spec = registry.get_iban_spec(country)
    except SchwiftyException:
        return False
    return not spec.aspirational


def _aba_checksum_ok(routing: str) -> bool:
    d = [int(c) for c in routing]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + (d[2] + d[5] + d[8])) % 10 == 0


def _name(raw: dict[str, Any]) -> str:
    name = str(raw.get("name") or "").strip()
    if not 2 <= len(name) <= 140:
        raise InvalidDestination("The account holder's name is required (2 to 140 characters)", field="name")
    return name


def validate_destination(raw: dict[str, Any]) -> PayoutDestination:
    """The normalised destination, or ``InvalidDestination`` (422) saying which field is wrong."""
    kind = raw.get("type")
    if kind not in DESTINATION_TYPES:
        raise InvalidDestination(f"type must be one of {', '.join(DESTINATION_TYPES)}", field="type")
    country = str(raw.get("country") or "").strip().upper() or None
    if kind == "iban":
        from schwifty import IBAN
        from schwifty.exceptions import SchwiftyException

        try:
            iban = IBAN(str(raw.get("iban") or ""), validate_bban=True)
        except SchwiftyException as exc:
            raise InvalidDestination(f"The IBAN is not valid: {exc}", field="iban") from exc
        if country and country != iban.country_code:
            raise InvalidDestination("The IBAN belongs to another country", field="country")
        return PayoutDestination(type="iban", iban=iban.compact, country=iban.country_code, name=_name(raw))
    if kind == "bank_account":
        if not country:
            raise InvalidDestination("A bank account needs its country", field="country")
        if _uses_iban(country):
            raise InvalidDestination(
                f"Accounts in {country} are paid to an IBAN: use type iban", field="type"
            )
        national = _NATIONAL_FORMATS.get(country)
        if national is None:
            raise InvalidDestination(f"Bank accounts in {country} are not supported yet", field="country")
        account_pattern, code_pattern, code_name = national
        account = re.sub(r"[\s-]", "", str(raw.get("account_number") or ""))
        bank_code = re.sub(r"[\s-]", "", str(raw.get("bank_code") or "")).upper()
        if not account_pattern.fullmatch(account):
            raise InvalidDestination(
                f"The account number is not a valid {country} account number", field="account_number"
            )
        if not code_pattern.fullmatch(bank_code) or (country == "US" and not _aba_checksum_ok(bank_code)):
            raise InvalidDestination(f"The {code_name} is not valid", field="bank_code")
        return PayoutDestination(
            type="bank_account", account_number=account, bank_code=bank_code, country=country, name=_name(raw)
        )
    if kind == "upi":
        vpa = str(raw.get("vpa") or "").strip()
        if not _VPA.fullmatch(vpa):
            raise InvalidDestination("The UPI address must look like name@bank", field="vpa")
        return PayoutDestination(type="upi", vpa=vpa, country="IN", name=_name(raw))
    if kind == "paypal":
        try:
            email = validate_email(str(raw.get("email") or ""), check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise InvalidDestination(f"The PayPal e-mail is not valid: {exc}", field="email") from exc
        destination = PayoutDestination(type="paypal", email=email, name=_name(raw))
        if country:
            destination["country"] = country
        return destination
    account_id = str(raw.get("account_id") or "").strip()
    if not _STRIPE_ACCOUNT.fullmatch(account_id):
        raise InvalidDestination("A Stripe connected account id looks like acct_…", field="account_id")
    destination = PayoutDestination(type="stripe_account", account_id=account_id, name=_name(raw))
    if country:
        destination["country"] = country
    return destination


def _tail(value: str, keep: int = 4) -> str:
    return "•" * max(0, min(len(value) - keep, 8)) + value[-keep:]


def mask_destination(destination: PayoutDestination | dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a destination: enough to recognise it, not enough to reuse it."""
    shown: dict[str, Any] = {
        "type": destination.get("type"),
        "name": destination.get("name"),
        "country": destination.get("country"),
    }
    if iban := destination.get("iban"):
        shown["iban"] = f"{iban[:4]} •••• {iban[-4:]}"
    if account := destination.get("account_number"):
        shown["account_number"] = _tail(account)
        shown["bank_code"] = destination.get("bank_code")
    if vpa := destination.get("vpa"):
        user, _, bank = vpa.partition("@")
        shown["vpa"] = f"{user[:2]}•••@{bank}"
    if email := destination.get("email"):
        local, _, domain = email.partition("@")
        shown["email"] = f"{local[:1]}•••@{domain}"
    if account_id := destination.get("account_id"):
        shown["account_id"] = f"acct_•••{account_id[-4:]}"
    return shown
