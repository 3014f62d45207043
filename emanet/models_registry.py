"""Imports every domain's models so Alembic and the tests see the whole schema."""

from emanet.core import models as core_models
from emanet.core.db import Base
from emanet.escrow import models as escrow_models
from emanet.ledger import models as ledger_models
from emanet.notifications import models as notifications_models
from emanet.otp import models as otp_models
from emanet.payments import models as payments_models
from emanet.providers import models as providers_models
from emanet.users import models as users_models
from emanet.webhooks import models as webhooks_models

metadata = Base.metadata
__all__ = [
    "core_models",
    "escrow_models",
    "ledger_models",
    "metadata",
    "notifications_models",
    "otp_models",
    "payments_models",
    "providers_models",
    "users_models",
    "webhooks_models",
]
