"""Settings: every one overridable by an ``EMANET_`` environment variable (listed in the README)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "dev-secret-key-change-me-0123456789abcdef"
# Standard Webhooks secret: "whsec_" + base64 of the HMAC key.
DEFAULT_SANDBOX_WEBHOOK_SECRET = "whsec_ZGV2LXNhbmRib3gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc="


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMANET_", env_file=".env", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    product_name: str = "Emanet"
    public_url: str = "http://127.0.0.1:8000"

    # Infrastructure
    database_url: str = "sqlite+aiosqlite:///./var/emanet.db"
    database_pool_size: int = 10
    database_max_overflow: int = 10
    database_echo: bool = False
    redis_url: str | None = None
    storage_dir: str = "./var/documents"
    cors_origins: list[str] = Field(default_factory=lambda: ["http://localhost:3000"])
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
        default_factory=lambda: {"TRY": 5_000_000, "USD": 500_000, "EUR": 500_000, "SAR": 2_000_000,
                                 "INR": 50_000_000, "NGN": 500_000_000}
    )
    amount_limits: dict[str, tuple[int, int]] = Field(
        default_factory=lambda: {
            "TRY": (1_000, 100_000_000), "USD": (100, 10_000_000), "EUR": (100, 10_000_000),
            "GBP": (100, 10_000_000), "SAR": (500, 40_000_000), "INR": (10_000, 1_000_000_000),
            "NGN": (50_000, 10_000_000_000), "JPY": (100, 1_000_000_000), "KWD": (1_000, 3_000_000),
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

    # Demo data on start (make run)
    load_demo_data: bool = False

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if self.env == "production":
            defaults = {
                "EMANET_SECRET_KEY": self.secret_key == DEFAULT_SECRET_KEY,
                "EMANET_SANDBOX_WEBHOOK_SECRET": self.sandbox_webhook_secret == DEFAULT_SANDBOX_WEBHOOK_SECRET,
            }
            still_default = [name for name, is_default in defaults.items() if is_default]
            if still_default:
                raise ValueError(f"production refuses to start with default secrets: {', '.join(still_default)}")
            if len(self.secret_key) < 32:
                raise ValueError("EMANET_SECRET_KEY must be at least 32 characters in production")
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
