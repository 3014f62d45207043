"""GET /api/v1/admin/users: filters, sorting, cursor pagination, and a constant number of queries."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from emanet.core.clock import FrozenClock
from emanet.users.models import Role, User, UserStatus
from tests.conftest import bearer
from tests.core.test_errors import assert_problem
from tests.factories import Factory

Row = dict[str, Any]


async def pages(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[list[Row]]:
    """Every page of the list, following ``next_cursor``."""
    collected: list[list[Row]] = []
    cursor = None
    while True:
        response = await client.get(
            "/api/v1/admin/users",
            headers=headers,
            params={**params, **({"cursor": cursor} if cursor else {})},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        collected.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return collected


async def people(factory: Factory, clock: FrozenClock) -> tuple[User, list[User]]:
    admin = await factory.user(role=Role.admin, name="Ada Admin", email="ada@emanet.test")
    made = []
    for name, role, status in [
        ("Ayşe Buyer", Role.user, UserStatus.active),
        ("Mehmet Seller", Role.user, UserStatus.active),
        ("Sami Support", Role.support, UserStatus.active),
        ("Fraud Frank", Role.user, UserStatus.suspended),
        ("Zeynep", Role.user, UserStatus.active),
    ]:
        clock.advance(minutes=1)
        made.append(await factory.user(role=role, name=name, status=status))
    return admin, made


async def test_newest_first_in_pages(client: httpx.AsyncClient, factory: Factory, clock: FrozenClock) -> None:
    admin, made = await people(factory, clock)
    result = await pages(client, bearer(admin), limit=2)
    assert [len(page) for page in result] == [2, 2, 2]
    assert [u["id"] for page in result for u in page] == [u.id for u in reversed(made)] + [admin.id]
    first = result[0][0]
    assert first["status"] == "active" and "suspended_reason" in first and "updated_at" in first


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"role": "support"}, ["Sami Support"]),
        ({"status": "suspended"}, ["Fraud Frank"]),
        ({"role": "user", "status": "active"}, ["Zeynep", "Mehmet Seller", "Ayşe Buyer"]),
        ({"q": "SELLER"}, ["Mehmet Seller"]),
        ({"q": "@emanet.test"}, ["Ada Admin"]),
        ({"q": "100%"}, []),  # LIKE wildcards in the search are literal
    ],
)
async def test_filters(
    client: httpx.AsyncClient, factory: Factory, clock: FrozenClock, params: dict[str, str], names: list[str]
) -> None:
    admin, _ = await people(factory, clock)
    result = await pages(client, bearer(admin), **params)
    assert [u["name"] for page in result for u in page] == names


async def test_search_by_id_and_phone(
    client: httpx.AsyncClient, factory: Factory, clock: FrozenClock
) -> None:
    admin, made = await people(factory, clock)
    target = made[1]
    for q in (target.id, target.phone):
        result = await pages(client, bearer(admin), q=q)
        assert [u["id"] for page in result for u in page] == [target.id]


async def test_multi_field_sort_paginates_without_gaps(
    client: httpx.AsyncClient, factory: Factory, clock: FrozenClock
) -> None:
    admin, made = await people(factory, clock)
    result = await pages(client, bearer(admin), sort="role,-name", limit=2)
    seen = [(u["role"], u["name"]) for page in result for u in page]
    expected = sorted(((u.role, u.name) for u in [admin, *made]), key=lambda pair: pair[1], reverse=True)
    assert seen == sorted(expected, key=lambda pair: pair[0])


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"sort": "password"}, "invalid_sort"),
        ({"cursor": "!!!"}, "invalid_cursor"),
        ({"role": "emperor"}, "validation_error"),
        ({"limit": "0"}, "validation_error"),
        ({"limit": "201"}, "validation_error"),
    ],
)
async def test_bad_parameters(
    client: httpx.AsyncClient, factory: Factory, params: dict[str, str], code: str
) -> None:
    admin = await factory.user(role=Role.admin)
    assert_problem(await client.get("/api/v1/admin/users", headers=bearer(admin), params=params), 422, code)


async def test_a_cursor_of_another_sort_is_refused(
    client: httpx.AsyncClient, factory: Factory, clock: FrozenClock
) -> None:
    admin, _ = await people(factory, clock)
    first = (await client.get("/api/v1/admin/users", headers=bearer(admin), params={"limit": 2})).json()
    mismatched = await client.get(
        "/api/v1/admin/users",
        headers=bearer(admin),
        params={"limit": 2, "sort": "name", "cursor": first["next_cursor"]},
    )
    assert_problem(mismatched, 422, "invalid_cursor")


async def test_the_number_of_queries_does_not_grow_with_rows(
    client: httpx.AsyncClient, factory: Factory, count_queries: Any
) -> None:
    admin = await factory.user(role=Role.admin)
    with count_queries() as few:
        response = await client.get("/api/v1/admin/users", headers=bearer(admin))
    assert len(response.json()["data"]) == 1
    for _ in range(15):
        await factory.user()
    with count_queries() as many:
        response = await client.get("/api/v1/admin/users", headers=bearer(admin))
    assert len(response.json()["data"]) == 16
    assert many.count == few.count <= 2, many.statements  # the caller, then one page
