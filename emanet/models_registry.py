"""Imports every domain's models so Alembic and the tests see the whole schema."""

from emanet.core import models as core_models
from emanet.core.db import Base
from emanet.users import models as users_models

metadata = Base.metadata
__all__ = ["core_models", "metadata", "users_models"]
