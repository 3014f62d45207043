"""The ``emanet`` command line: serve, migrate, worker, users, tokens, demo data."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from emanet.core.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

app = typer.Typer(help="Emanet: open-source escrow payments.", no_args_is_help=True)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
app.add_typer(users_app, name="users")
ledger_app = typer.Typer(help="Ledger checks.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
console = Console()
T = TypeVar("T")


def _in_transaction(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    # Imported here: ``emanet serve`` (a supervisor process under --workers) never needs the ORM or FastAPI.
    from emanet.core.db import Database
    from emanet.core.errors import EmanetError

    async def _run() -> T:
        database = Database(get_settings())
        try:
            async with database.transaction() as session:
                return await work(session)
        finally:
            await database.dispose()

    try:
        return asyncio.run(_run())
    except EmanetError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from exc


@app.command()
def migrate() -> None:
    """Apply every database migration (idempotent)."""
    from emanet.core.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url, "heads")  # every domain's migration branch
    console.print(f"[green]migrated[/green] {settings.database_url.split('@')[-1]}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", help="Port")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes")] = 1,
) -> None:
    """Serve the HTTP API."""
    from emanet.core.server import serve as run_server

    run_server(host, port, workers)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Jobs run at once by this process")] = 4,
) -> None:
    """Run background jobs and timers until interrupted."""
    from emanet.core.worker import run_worker

    work = run_worker(get_settings(), concurrency=concurrency)
    if sys.platform == "win32":
        asyncio.run(work)
    else:  # the server's event loop too; the benchmark measured asyncio's own at 15 % of the worker's CPU
        import uvloop

        uvloop.run(work)


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Option(help="Display name")],
    email: Annotated[str | None, typer.Option(help="E-mail")] = None,
    phone: Annotated[str | None, typer.Option(help="Phone, international format")] = None,
    role: Annotated[str, typer.Option(help="user | support | admin")] = "user",
) -> None:
    """Create a user."""
    from emanet.users.service import create_user

    user = _in_transaction(lambda s: create_user(s, email=email, phone=phone, name=name, role=role))
    console.print(user.id)


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="User id, e-mail or phone")],
    minutes: Annotated[int | None, typer.Option(help="Lifetime in minutes")] = None,
) -> None:
    """Print an access token for USER from the built-in issuer."""
    from emanet.core.auth import issue_access_token
    from emanet.users.service import find_user

    found = _in_transaction(lambda s: find_user(s, user))
    typer.echo(issue_access_token(found, minutes=minutes))


@ledger_app.command("verify")
def ledger_verify() -> None:
    """Recompute every balance from the postings and check the ledger's invariants; exit 1 on any problem."""
    from emanet.ledger.service import verify_ledger

    report = _in_transaction(verify_ledger)
    console.print(f"checked {report.accounts_checked} accounts and {report.entries_checked} entries")
    problems = {
        "balance mismatches": report.balance_mismatches,
        "unbalanced entries": report.unbalanced_entries,
        "currencies not summing to zero": report.currency_totals_not_zero,
        "negative accounts": report.negative_accounts,
    }
    for title, rows in problems.items():
        if rows:
            table = Table(*rows[0].keys(), title=title)
            for row in rows:
                table.add_row(*(str(v) for v in row.values()))
            console.print(table)
    if not report.ok:
        console.print("[red]ledger verification FAILED[/red]")
        raise typer.Exit(1)
    console.print("[green]ledger OK[/green]")


@app.command()
def reconcile(
    provider: Annotated[str, typer.Option(help="Provider name, e.g. sandbox, stripe")],
    day: Annotated[str, typer.Option("--date", help="The UTC day to reconcile, YYYY-MM-DD")],
) -> None:
    """Compare a provider's records of a day with ours; store the report; exit 1 when anything differs or
    could not be verified. A provider without a settlement listing is asked about each of our payments."""
    from datetime import date

    from emanet.core.db import Database
    from emanet.core.errors import EmanetError
    from emanet.payments.models import ReconciliationReport
    from emanet.payments.reconcile import reconcile as run_reconciliation

    try:
        wanted = date.fromisoformat(day)
    except ValueError as exc:
        raise typer.BadParameter("use YYYY-MM-DD", param_hint="--date") from exc

    async def _run() -> ReconciliationReport:
        settings = get_settings()
        database = Database(settings)
        try:
            return await run_reconciliation(database, settings, provider, wanted, requested_by="cli")
        finally:
            await database.dispose()

    try:
        report = asyncio.run(_run())
    except EmanetError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from exc
    console.print(
        f"{provider} {wanted} ({report.method}): {report.provider_records} provider records, "
        f"{report.our_records} ours, {report.matched} matched, {report.missing} missing, "
        f"{report.extra} extra, {report.mismatched} mismatched, {report.unverified} unverified "
        f"(report {report.id})",
        highlight=False,
    )
    if report.method == "per_record":
        console.print(
            "[yellow]per-record mode:[/yellow] the provider publishes no settlement listing, so each of our "
            "payments was looked up; records the provider has and we don't (missing) cannot be detected",
            highlight=False,
        )
    if report.notes:
        console.print(report.notes, markup=False, highlight=False)
    if report.items:
        columns = ["issue", "kind", "reference", "currency", "provider_amount", "our_amount", "our_id"]
        if report.method == "per_record":
            columns += ["provider_status", "error_code"]
        table = Table(*columns, title="differences")
        for item in report.items:
            table.add_row(*(str(item.get(column, "")) for column in columns))
        console.print(table)
        raise typer.Exit(1)
    console.print("[green]reconciled[/green]")


@app.command()
def demo() -> None:
    """Load demo users and escrows (idempotent) and show how to get their tokens."""
    from emanet.demo import load_demo

    users = _in_transaction(load_demo)
    table = Table("user", "role", "e-mail", title="Demo users")
    for user in users:
        table.add_row(user.id, user.role, user.email or "")
    console.print(table)
    console.print(
        "Tokens: [bold]export BUYER=$(.venv/bin/emanet token buyer@demo.emanet.dev)[/bold] "
        "(likewise seller@, admin@, support@demo.emanet.dev)"
    )


if __name__ == "__main__":
    app()
