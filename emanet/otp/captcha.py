"""CAPTCHA verification behind one interface: hCaptcha, reCAPTCHA, Cloudflare Turnstile, or a test verifier.

The three services share the "siteverify" shape: POST form ``secret``, ``response`` (the client's token)
and optionally ``remoteip``; answer JSON ``{"success": true|false, ...}``.
"""

from __future__ import annotations

import hmac
from typing import Protocol

import httpx
import structlog

from emanet.core.settings import Settings

log = structlog.get_logger("emanet.captcha")

SITEVERIFY_URLS = {
    "hcaptcha": "https://api.hcaptcha.com/siteverify",
    "recaptcha": "https://www.google.com/recaptcha/api/siteverify",
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
}


class CaptchaVerifier(Protocol):
    name: str

    async def verify(self, token: str, remote_ip: str | None) -> bool: ...


class SiteVerifyCaptcha:
    def __init__(self, name: str, secret: str, url: str, timeout: float = 5) -> None:
        self.name, self.secret, self.url, self.timeout = name, secret, url, timeout

    async def verify(self, token: str, remote_ip: str | None) -> bool:
        form = {"secret": self.secret, "response": token}
        if remote_ip:
            form["remoteip"] = remote_ip
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                response = await http.post(self.url, data=form)
            ok = response.status_code == 200 and response.json().get("success") is True
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("captcha_unreachable", provider=self.name, error=str(exc))
            return False  # fail closed: without a verdict the gate stays shut
        if not ok:
            log.info("captcha_rejected", provider=self.name)
        return ok


class TestCaptcha:
    """Accepts exactly ``EMANET_CAPTCHA_TEST_TOKEN`` (tests and local development; refused in production)."""

    name = "test"

    def __init__(self, token: str) -> None:
        self.token = token

    async def verify(self, token: str, remote_ip: str | None) -> bool:
        return hmac.compare_digest(token.encode(), self.token.encode())


def build_verifier(settings: Settings) -> CaptchaVerifier:
    if settings.captcha_provider == "test":
        if settings.is_production:
            raise ValueError("EMANET_CAPTCHA_PROVIDER=test is refused in production")
        return TestCaptcha(settings.captcha_test_token)
    if not settings.captcha_secret:
        raise ValueError(f"EMANET_CAPTCHA_SECRET is required for {settings.captcha_provider}")
    url = settings.captcha_verify_url or SITEVERIFY_URLS[settings.captcha_provider]
    return SiteVerifyCaptcha(settings.captcha_provider, settings.captcha_secret, url)
