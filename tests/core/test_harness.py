"""The test harness itself: on CI a missing service fails the run; elsewhere it skips."""

from __future__ import annotations

import pytest

from tests.conftest import _unavailable


def test_an_unreachable_service_fails_on_ci() -> None:
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is not reachable"):
        _unavailable("PostgreSQL", ConnectionRefusedError(111, "refused"), in_ci=True)


def test_an_unreachable_service_skips_elsewhere() -> None:
    with pytest.raises(pytest.skip.Exception, match="Redis is not reachable"):
        _unavailable("Redis", ConnectionRefusedError(111, "refused"), in_ci=False)
