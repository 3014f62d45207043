"""Settings: every one overridable by an ``EMANET_`` environment variable (listed in the README)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

import orjson
from limits import parse as parse_rate_limit
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SECRET_KEY = "dev-secret-key-change-me-0123456789abcdef"  # noqa: S105 (refused in production)
# Standard Webhooks secret: "whsec_" + base64 of the HMAC key.
DEFAULT_SANDBOX_WEBHOOK_SECRET = "whsec_ZGV2LXNhbmRib3gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc="  # noqa: S105


class FeeRule(BaseModel):
    market_type: Literal["product", "service", "project"]
    category: str | None = None
    percent_bps: int = Field(ge=0, le=10_000)
    fixed: dict[str, int] = Field(default_factory=dict)
    minimum: dict[str, int] = Field(default_factory=dict)
    maximum: dict[str, int] = Field(default_factory=dict)


class CategoryRule(BaseModel):
    requires_delivery_document: bool = False
    digital_auto_deliver: bool = False
    max_amount: dict[str, int] = Field(default_factory=dict)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMANET_", env_file=".env", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    product_name: str = "Emanet"
    public_url: str = "http://127.0.0.1:8000"

    # Infrastructure
    database_url: str = "sqlite+aiosqlite:///./var/emanet.db"
    # Connections are opened as needed and kept. One above the pool size is closed again when it is
    # returned, so under steady load it costs a new PostgreSQL process per request: at 16 concurrent /me
    # requests, a pool of 10 + 10 overflow opened 293 sessions in 17 s, a pool of 20 none after the first.
    # The same 20 at most per process as 10 + 10, without that churn.
    database_pool_size: int = Field(default=20, ge=1)
    database_max_overflow: int = Field(default=0, ge=0)
    database_echo: bool = False
    redis_url: str | None = None
    # Prefixes every Redis key Emanet writes, so deployments (or test runs) can share one Redis.
    redis_key_prefix: str = "emanet"
    storage_dir: str = "./var/documents"
    # Comma-separated (or a JSON list) in the environment: EMANET_CORS_ORIGINS=https://a.example,https://b.example
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["http://localhost:3000"])
    max_body_bytes: int = 1_048_576
    log_level: str = "INFO"
    log_json: bool = True
    run_worker_in_process: bool = False
    worker_poll_seconds: float = 0.5

    # Auth
    secret_key: str = DEFAULT_SECRET_KEY
    jwt_issuer: str = "emanet"
    jwt_audience: str = "emanet-api"
    access_token_minutes: int = 60 * 24
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_leeway_seconds: int = 60
    oidc_default_role: Literal["user", "support", "admin"] = "user"

    # Idempotency and rate limits
    idempotency_ttl_hours: int = 24
    rate_limit_default: str = "100/minute"
    rate_limit_anonymous: str = "60/minute"
    rate_limit_otp: str = "5/minute"
    rate_limit_login: str = "10/minute"
    rate_limit_payments: str = "30/minute"
    rate_limit_enabled: bool = True

    # Escrow rules (seeds 002 and 003)
    min_hold_hours: float = 24
    inspection_days: float = 7
    dispute_window_days: float = 7
    dispute_escalation_hours: float = 48
    payment_expiry_hours: float = 72
    verification_required_above: dict[str, int] = Field(
        default_factory=lambda: {
            "TRY": 5_000_000,
            "USD": 500_000,
            "EUR": 500_000,
            "SAR": 2_000_000,
            "INR": 50_000_000,
            "NGN": 500_000_000,
        }
    )
    amount_limits: dict[str, tuple[int, int]] = Field(
        default_factory=lambda: {
            "TRY": (1_000, 100_000_000),
            "USD": (100, 10_000_000),
            "EUR": (100, 10_000_000),
            "GBP": (100, 10_000_000),
            "SAR": (500, 40_000_000),
            "INR": (10_000, 1_000_000_000),
            "NGN": (50_000, 10_000_000_000),
            "JPY": (100, 1_000_000_000),
            "KWD": (1_000, 3_000_000),
        }
    )

    # Fees: percentage (basis points) + fixed, clamped to min/max (minor units per currency), per market
    # type and optionally category; the most specific rule wins.
    fee_rules: list[FeeRule] = Field(
        default_factory=lambda: [
            FeeRule(market_type="product", percent_bps=250),
            FeeRule(market_type="service", percent_bps=500),
            FeeRule(market_type="project", percent_bps=300),
            FeeRule(market_type="product", category="digital_goods", percent_bps=500),
        ]
    )
    # Category rules (seed 000): digital auto-deliver, delivery document required, per-category max amount.
    category_rules: dict[str, CategoryRule] = Field(
        default_factory=lambda: {
            "general": CategoryRule(),
            "digital_goods": CategoryRule(digital_auto_deliver=True),
            "electronics": CategoryRule(requires_delivery_document=True),
            "vehicles": CategoryRule(requires_delivery_document=True, max_amount={"TRY": 2_000_000_000}),
            "services": CategoryRule(),
            "software": CategoryRule(),
        }
    )
    # Satisfaction-based split (seed 002): rating -> penalty in basis points of the seller's share.
    satisfaction_penalty_bps: dict[int, int] = Field(
        default_factory=lambda: {5: 0, 4: 0, 3: 1_000, 2: 2_500, 1: 5_000}
    )
    satisfaction_penalty_to: Literal["buyer", "platform"] = "buyer"

    # Reporting (display only; money in escrow is never converted)
    reporting_currency: str = "USD"
    fx_rates: dict[str, str] = Field(
        default_factory=lambda: {
            "TRY": "0.029",
            "EUR": "1.08",
            "GBP": "1.27",
            "SAR": "0.2666",
            "INR": "0.012",
            "NGN": "0.00065",
            "JPY": "0.0067",
            "KWD": "3.25",
        }
    )

    # Providers
    sandbox_webhook_secret: str = DEFAULT_SANDBOX_WEBHOOK_SECRET
    webhook_ip_allowlist: dict[str, list[str]] = Field(default_factory=dict)
    webhook_tolerance_seconds: int = 300
    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str = "https://api.stripe.com"
    razorpay_key_id: str | None = None
    razorpay_key_secret: str | None = None
    razorpay_webhook_secret: str | None = None
    razorpay_api_base: str = "https://api.razorpay.com"
    paypal_client_id: str | None = None
    paypal_client_secret: str | None = None
    paypal_webhook_id: str | None = None
    paypal_api_base: str = "https://api-m.sandbox.paypal.com"
    paystack_secret_key: str | None = None
    paystack_api_base: str = "https://api.paystack.co"
    jetcheckout_api_key: str | None = None
    jetcheckout_secret_key: str | None = None
    jetcheckout_api_base: str = "https://api.jetcheckout.com"
    jetcheckout_test_mode: bool = False  # sends mode "T" (test) instead of "P" (production)
    moyasar_secret_key: str | None = None
    moyasar_webhook_token: str | None = None
    moyasar_api_base: str = "https://api.moyasar.com"
    paytabs_profile_id: str | None = None
    paytabs_server_key: str | None = None
    paytabs_api_base: str = "https://secure.paytabs.sa"
    iyzico_api_key: str | None = None
    iyzico_secret_key: str | None = None
    iyzico_api_base: str = "https://sandbox-api.iyzipay.com"
    paytr_merchant_id: str | None = None
    paytr_merchant_key: str | None = None
    paytr_merchant_salt: str | None = None
    paytr_api_base: str = "https://www.paytr.com"
    paytr_test_mode: bool = False  # PayTR test_mode=1: test cards, no money moves
    # Provider HTTP calls (emanet/providers/http.py): timeout, and retries of idempotent calls
    provider_timeout_seconds: float = 15
    provider_max_attempts: int = 3
    provider_retry_initial_seconds: float = 0.5
    provider_retry_max_seconds: float = 8
    # Where the sandbox posts its webhooks (default public_url) and when its fake bank settles payouts
    sandbox_callback_base: str | None = None
    sandbox_payout_settle_seconds: float = 5
    # Payments (emanet/payments): provider attempts per payment (the first plus retries); GET /payments/{id}
    # asks the provider when its last check is older than the refresh interval; the status poll picks up
    # unsettled payments and payouts whose last news is older than the poll interval
    payment_max_attempts: int = 3
    payment_status_refresh_seconds: float = 10
    payment_poll_after_seconds: float = 300
    # RazorpayX account number that payouts are sent from
    razorpay_account_number: str | None = None
    # PayPal webhook certificates are fetched only from URLs starting with one of these
    paypal_cert_url_prefixes: list[str] = Field(
        default_factory=lambda: [
            "https://api.paypal.com/",
            "https://api-m.paypal.com/",
            "https://api.sandbox.paypal.com/",
            "https://api-m.sandbox.paypal.com/",
        ]
    )
    # PEM file of the root CAs a PayPal webhook certificate's chain must end at (unset: certifi's bundle)
    paypal_cert_ca_bundle: str | None = None
    # A webhook certificate served without its intermediate is completed from its caIssuers URL (Authority
    # Information Access), fetched only from URLs starting with one of these (DigiCert's caIssuers host)
    paypal_cert_issuer_url_prefixes: list[str] = Field(
        default_factory=lambda: ["http://cacerts.digicert.com/", "https://cacerts.digicert.com/"]
    )

    # Messaging
    sms_provider: Literal["console", "twilio", "messagebird"] = "console"
    sms_fallback_provider: Literal["console", "twilio", "messagebird"] | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from_number: str | None = None
    twilio_api_base: str = "https://api.twilio.com"
    messagebird_access_key: str | None = None
    messagebird_originator: str = "Emanet"
    messagebird_api_base: str = "https://rest.messagebird.com"
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "Emanet <no-reply@emanet.local>"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_timeout_seconds: float = 10
    sms_hourly_cap_per_account: int = 100
    sms_attempts_per_provider: int = 2  # tries on a provider (transient errors) before the fallback
    sms_timeout_seconds: float = 5
    sms_status_callbacks: bool = False  # ask Twilio to post delivery receipts to /api/v1/webhooks/sms/twilio
    reminder_lead_hours: float = 24  # remind buyers this long before a payment or inspection deadline

    # Background worker (emanet/core/worker.py)
    worker_concurrency: int = 2  # in-process worker under `make run`
    worker_lease_seconds: float = 60  # a job whose worker stops heart-beating this long is claimed again
    worker_job_timeout_seconds: float = 300
    worker_retry_base_seconds: float = 10
    worker_retry_max_seconds: float = 3600
    worker_shutdown_grace_seconds: float = 20
    job_retention_days: float = 7

    # Outbound webhooks (Standard Webhooks)
    webhook_retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )  # ~27 h after the first try
    webhook_timeout_seconds: float = 10
    webhook_disable_after_failures: int = 15  # consecutive failed attempts before an endpoint is disabled
    webhook_secret_overlap_hours: float = 24  # after a rotation, the old secret also signs this long
    webhook_allow_private_targets: bool | None = None  # None: allowed unless env=production

    # OTP and CAPTCHA (seed 001)
    otp_ttl_seconds: int = 300
    otp_max_attempts: int = 3
    otp_resend_interval_seconds: int = 60
    otp_captcha_after_failures: int = 3  # failed checks on a phone before a CAPTCHA is required
    captcha_provider: Literal["test", "hcaptcha", "recaptcha", "turnstile"] = "test"
    captcha_secret: str | None = None
    captcha_verify_url: str | None = None  # default: the provider's siteverify URL
    captcha_test_token: str = "captcha-test-pass"  # noqa: S105 - the "test" verifier's token; refused in production

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return orjson.loads(text)
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @field_validator(
        "rate_limit_default",
        "rate_limit_anonymous",
        "rate_limit_otp",
        "rate_limit_login",
        "rate_limit_payments",
    )
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        try:
            parse_rate_limit(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit such as '100/minute': {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _oidc_needs_issuer_and_keys(self) -> Settings:
        # Half a configuration would silently turn OIDC off (or trust a JWKS for no issuer).
        if bool(self.oidc_issuer) != bool(self.oidc_jwks_url):
            raise ValueError("set EMANET_OIDC_ISSUER and EMANET_OIDC_JWKS_URL together")
        return self

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if self.env == "production":
            defaults = {
                "EMANET_SECRET_KEY": self.secret_key == DEFAULT_SECRET_KEY,
                "EMANET_SANDBOX_WEBHOOK_SECRET": self.sandbox_webhook_secret
                == DEFAULT_SANDBOX_WEBHOOK_SECRET,
            }
            still_default = [name for name, is_default in defaults.items() if is_default]
            if still_default:
                raise ValueError(
                    "production refuses to start with default secrets: " + ", ".join(still_default)
                )
            if len(self.secret_key) < 32:
                raise ValueError("EMANET_SECRET_KEY must be at least 32 characters in production")
            if self.captcha_provider == "test":
                # The test verifier accepts a token anyone can read in this file.
                raise ValueError(
                    "production needs a real EMANET_CAPTCHA_PROVIDER (hcaptcha, recaptcha, turnstile)"
                )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_production(self) -> bool:
        return self.env == "production"


@lru_cache
def get_settings() -> Settings:
    return Settings()
