"""Which providers exist, which are configured, and which payment methods they offer.

Adapters are imported lazily so an unconfigured provider's SDK is never loaded. A provider is configured
when every setting in its ``required_settings`` is set; the built-in ``sandbox`` needs none.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from emanet.core.db import Database
from emanet.core.settings import Settings
from emanet.providers.base import METHODS, PaymentProvider, ProviderNotConfigured


@dataclass(frozen=True)
class ProviderSpec:
    path: str  # "module:ClassName"
    required_settings: tuple[str, ...]


# Order is the order providers are offered in for a method; the sandbox comes last.
PROVIDERS: dict[str, ProviderSpec] = {
    "jetcheckout": ProviderSpec(
        "emanet.providers.jetcheckout:JetcheckoutProvider", ("jetcheckout_api_key", "jetcheckout_secret_key")
    ),
    "iyzico": ProviderSpec("emanet.providers.iyzico:IyzicoProvider", ("iyzico_api_key", "iyzico_secret_key")),
    "paytr": ProviderSpec(
        "emanet.providers.paytr:PaytrProvider",
        ("paytr_merchant_id", "paytr_merchant_key", "paytr_merchant_salt"),
    ),
    "stripe": ProviderSpec("emanet.providers.stripe:StripeProvider", ("stripe_api_key",)),
    "paypal": ProviderSpec(
        "emanet.providers.paypal:PaypalProvider", ("paypal_client_id", "paypal_client_secret")
    ),
    "razorpay": ProviderSpec(
        "emanet.providers.razorpay:RazorpayProvider", ("razorpay_key_id", "razorpay_key_secret")
    ),
    "paystack": ProviderSpec("emanet.providers.paystack:PaystackProvider", ("paystack_secret_key",)),
    "moyasar": ProviderSpec("emanet.providers.moyasar:MoyasarProvider", ("moyasar_secret_key",)),
    "paytabs": ProviderSpec(
        "emanet.providers.paytabs:PaytabsProvider", ("paytabs_profile_id", "paytabs_server_key")
    ),
    "sandbox": ProviderSpec("emanet.providers.sandbox:SandboxProvider", ()),
}


@dataclass(frozen=True)
class AvailableMethod:
    """A payment method and the configured providers that offer it, in preference order."""

    method: str
    providers: list[str] = field(default_factory=list)


def provider_class(name: str) -> type[PaymentProvider]:
    spec = PROVIDERS.get(name)
    if spec is None:
        raise ProviderNotConfigured(f"Unknown payment provider {name!r}", code="unknown_provider")
    module_name, class_name = spec.path.split(":")
    cls: type[PaymentProvider] = getattr(importlib.import_module(module_name), class_name)
    return cls


def is_configured(name: str, settings: Settings) -> bool:
    spec = PROVIDERS.get(name)
    return spec is not None and all(getattr(settings, s) for s in spec.required_settings)


def get_provider(name: str, settings: Settings, database: Database | None = None) -> PaymentProvider:
    """The adapter for ``name``; ``ProviderNotConfigured`` when unknown or its credentials are not set.

    ``database`` is required for the sandbox (it keeps its fake bank's ledger in its own tables).
    """
    if not is_configured(name, settings):
        spec = PROVIDERS.get(name)
        if spec is None:
            raise ProviderNotConfigured(f"Unknown payment provider {name!r}", code="unknown_provider")
        missing = ", ".join(f"EMANET_{s.upper()}" for s in spec.required_settings if not getattr(settings, s))
        raise ProviderNotConfigured(f"Payment provider {name!r} is not configured: set {missing}")
    return provider_class(name)(settings, database)


def configured_providers(settings: Settings) -> list[str]:
    """Names of the providers usable with these settings, in preference order (sandbox always, last)."""
    return [name for name in PROVIDERS if is_configured(name, settings)]


def payment_methods(currency: str, country: str | None, settings: Settings) -> list[AvailableMethod]:
    """Methods available for ``currency`` (and payer ``country``) with the providers offering each,
    ordered as ``base.METHODS``; methods no configured provider offers are left out."""
    offered: dict[str, list[str]] = {}
    for name in configured_providers(settings):
        for method in provider_class(name)(settings).methods(currency, country):
            offered.setdefault(method, []).append(name)
    rank = {method: i for i, method in enumerate(METHODS)}
    ordered = sorted(offered.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))
    return [AvailableMethod(method, providers) for method, providers in ordered]
