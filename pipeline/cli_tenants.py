"""`genguard tenants ...` and `genguard apikeys ...`: the service's tenants and API keys.

(`genguard keys` manages the C2PA signing keys; API keys are `apikeys`.) A new key is printed once and
stored only as its hash; list shows ids, roles, expiry and revocation, never a key.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

from genguard.pipeline.cli_common import db_option, print_json

ROLE_CHOICES = ("generator", "reviewer", "auditor", "admin")


def _open(db_url: str | None) -> Any:
    from genguard.audit.service_store import ServiceStore

    return ServiceStore.open(db_url)


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@click.group()
def tenants() -> None:
    """The service's tenants."""


@tenants.command("create")
@click.argument("name")
@db_option
def tenants_create(name: str, db_url: str | None) -> None:
    """Create tenant NAME (lower-case letters, digits and '-')."""
    with _open(db_url) as store:
        tenant = store.create_tenant(name)
    click.echo(f"tenant {tenant.name} ({tenant.id})")


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True)
@db_option
def tenants_list(as_json: bool, db_url: str | None) -> None:
    """List the tenants."""
    with _open(db_url) as store:
        found = store.list_tenants()
    if as_json:
        print_json([{"id": t.id, "name": t.name, "created_at": _when(t.created_at)} for t in found])
        return
    for tenant in found:
        click.echo(f"{tenant.name}\t{tenant.id}\t{_when(tenant.created_at)}")


@click.group()
def apikeys() -> None:
    """The service's API keys (shown once, stored as a hash, revocable, with expiry)."""


@apikeys.command("create")
@click.option("--tenant", required=True, help="The tenant's name.")
@click.option("--role", required=True, type=click.Choice(ROLE_CHOICES))
@click.option(
    "--expires-in-days", type=click.FloatRange(min=0, min_open=True), default=None, help="Default: never."
)
@click.option("--label", default="", help="A note for whoever lists the keys.")
@db_option
def apikeys_create(
    tenant: str, role: str, expires_in_days: float | None, label: str, db_url: str | None
) -> None:
    """Issue a key; it is printed once (stdout) and cannot be shown again."""
    expires = None if expires_in_days is None else datetime.now(UTC) + timedelta(days=expires_in_days)
    with _open(db_url) as store:
        issued = store.issue_key(tenant, role, expires_at=expires, label=label)
    click.echo(
        f"key {issued.info.id} for tenant {tenant}, role {role}"
        + (f", expires {_when(expires)}" if expires else "")
        + "; shown once:",
        err=True,
    )
    click.echo(issued.secret)


@apikeys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True)
@db_option
def apikeys_list(tenant: str | None, as_json: bool, db_url: str | None) -> None:
    """List keys: id, tenant, role, state, expiry (never the key)."""
    with _open(db_url) as store:
        keys = store.list_keys(tenant)
    now = datetime.now(UTC)
    rows = [
        {
            "id": k.id,
            "tenant": k.tenant_name,
            "role": k.role,
            "state": k.state(now).value,
            "label": k.label,
            "created_at": _when(k.created_at),
            "expires_at": _when(k.expires_at),
            "revoked_at": _when(k.revoked_at),
        }
        for k in keys
    ]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        click.echo(f"{row['id']}\t{row['tenant']}\t{row['role']}\t{row['state']}\t{row['expires_at'] or '-'}")


@apikeys.command("revoke")
@click.argument("key_id")
@db_option
def apikeys_revoke(key_id: str, db_url: str | None) -> None:
    """Revoke KEY_ID: from now on it authenticates nothing."""
    with _open(db_url) as store:
        key = store.revoke_key(key_id)
    click.echo(f"revoked {key.id} ({key.tenant_name}, {key.role}) at {_when(key.revoked_at)}")
