"""Which providers are configured, and which payment methods they offer."""

from __future__ import annotations

import pytest

from emanet.core.db import Database
from emanet.core.settings import Settings
from emanet.providers.base import PaymentProvider, ProviderNotConfigured
from emanet.providers.registry import (
    PROVIDERS,
    configured_providers,
    get_provider,
    payment_methods,
    provider_class,
)
from emanet.providers.sandbox import SandboxProvider
from emanet.providers.stripe import StripeProvider


def bare(settings: Settings, **credentials: str) -> Settings:
    """Settings with no provider credentials at all, then the given ones."""
    cleared = {name: None for spec in PROVIDERS.values() for name in spec.required_settings}
    return settings.model_copy(update={**cleared, **credentials})


def test_sandbox_is_always_there(settings: Settings) -> None:
    assert configured_providers(bare(settings)) == ["sandbox"]


def test_credentials_configure_a_provider(settings: Settings, database: Database) -> None:
    configured = bare(settings, stripe_api_key="sk_test_x", paystack_secret_key="sk_test_y")
    assert configured_providers(configured) == ["stripe", "paystack", "sandbox"]
    assert isinstance(get_provider("stripe", configured), StripeProvider)
    assert isinstance(get_provider("sandbox", configured, database), SandboxProvider)


async def test_the_sandbox_needs_the_database_to_charge(settings: Settings) -> None:
    sandbox = get_provider("sandbox", settings)
    assert sandbox.methods("TRY") == ["card"]  # discovery works without it
    with pytest.raises(ProviderNotConfigured):  # the sandbox keeps its ledger in the database
        await sandbox.get_payment("ch_sandbox_x")


def test_unconfigured_and_unknown_providers(settings: Settings) -> None:
    with pytest.raises(ProviderNotConfigured) as missing:
        get_provider("razorpay", bare(settings, razorpay_key_id="rzp_x"))
    assert missing.value.status == 422
    assert "EMANET_RAZORPAY_KEY_SECRET" in missing.value.detail and "KEY_ID" not in missing.value.detail
    with pytest.raises(ProviderNotConfigured) as unknown:
        get_provider("bitcoin", settings)
    assert unknown.value.code == "unknown_provider"


def test_payment_methods_with_their_providers(settings: Settings) -> None:
    configured = bare(settings, stripe_api_key="sk", paypal_client_id="id", paypal_client_secret="secret")
    methods = {m.method: m.providers for m in payment_methods("USD", "US", configured)}
    assert methods == {
        "card": ["stripe", "paypal", "sandbox"],
        "apple_pay": ["stripe"],
        "google_pay": ["stripe"],
        "paypal": ["paypal"],
    }
    ordered = [m.method for m in payment_methods("USD", "US", configured)]
    assert ordered == ["card", "apple_pay", "google_pay", "paypal"]  # base.METHODS order
    assert [(m.method, m.providers) for m in payment_methods("TRY", "TR", configured)] == [
        ("card", ["stripe", "sandbox"]),
        ("apple_pay", ["stripe"]),
        ("google_pay", ["stripe"]),
    ]
    assert payment_methods("ZZZ", None, bare(settings)) == []  # no provider takes an unknown currency


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_registered_adapter_matches_its_entry(name: str, settings: Settings) -> None:
    cls = provider_class(name)
    assert issubclass(cls, PaymentProvider)
    assert cls.name == name
    assert cls.display_name and cls.supported_currencies
    for setting in PROVIDERS[name].required_settings:
        assert setting in Settings.model_fields
