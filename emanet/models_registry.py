"""Imports every domain's models so Alembic and the tests see the whole schema."""

from emanet.core import models as core_models
from emanet.core.db import Base
from emanet.providers import models as providers_models
from emanet.escrow import models as escrow_models
from emanet.ledger import models as ledger_models
from emanet.users import models as users_models

metadata = Base.metadata
__all__ = ["core_models", "escrow_models", "ledger_models", "metadata", "providers_models", "users_models"]
