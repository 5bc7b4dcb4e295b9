"""`genguard tenants ...` and `genguard apikeys ...`: the service's tenants and API keys.

(`genguard keys` manages the C2PA signing keys; API keys are `apikeys`.) A new key is printed once and
stored only as its hash; list shows ids, roles, expiry and revocation, never a key. Each tenant has its
own audit space (genguard.audit.tenant_spaces), its own pack when set, and its own keys when made with
`--own-keys` or given; `tenants show` prints where its chain lives and how its auditor verifies it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
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
@click.option(
    "--policy",
    default=None,
    help="The tenant's policy pack (a shipped name or a YAML path); default: the service's --policy.",
)
@click.option(
    "--own-keys",
    is_flag=True,
    help="A fresh watermark key and (unless --signing-key/--signing-chain) a development signing chain "
    "for an organisation named after the tenant, in the tenant's folder; default: the service's keys.",
)
@click.option(
    "--signing-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The tenant's own C2PA signing key (PEM), with --signing-chain.",
)
@click.option(
    "--signing-chain",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Its certificate chain (PEM, end-entity first).",
)
@db_option
def tenants_create(
    name: str,
    policy: str | None,
    own_keys: bool,
    signing_key: Path | None,
    signing_chain: Path | None,
    db_url: str | None,
) -> None:
    """Create tenant NAME (lower-case letters, digits and '-') with its own audit space: its chain, log
    key and checkpoints (`genguard tenants show NAME` says where)."""
    from genguard.audit.tenant_spaces import create_tenant

    with _open(db_url) as store:
        tenant = create_tenant(
            store,
            db_url,
            name,
            policy=policy,
            own_keys=own_keys,
            signing_key=signing_key,
            signing_chain=signing_chain,
        )
    click.echo(f"tenant {tenant.name} ({tenant.id})")


@tenants.command("set-policy")
@click.argument("name")
@click.argument("policy")
@db_option
def tenants_set_policy(name: str, policy: str, db_url: str | None) -> None:
    """Give tenant NAME the policy pack POLICY (a shipped name or a YAML path; 'service' for the
    service's own) from its next job on; its records keep the pack each was made under."""
    from genguard.audit.tenant_spaces import set_policy

    with _open(db_url) as store:
        tenant = set_policy(store, name, None if policy == "service" else policy)
    click.echo(f"tenant {tenant.name}: policy {tenant.policy or 'the service pack'}")


def _describe(tenant: Any, db_url: str | None) -> dict[str, Any]:
    """What `tenants show` and `tenants list --json` print: paths and names, never key material."""
    from genguard.audit.tenant_spaces import layout

    space = layout(db_url, tenant.id)
    return {
        "id": tenant.id,
        "name": tenant.name,
        "created_at": _when(tenant.created_at),
        "policy": tenant.policy,
        "signing": "own" if tenant.signing_key else "service",
        "signing_chain": str(space.path(tenant.signing_chain)) if tenant.signing_chain else None,
        "watermark_key": "own" if tenant.watermark_key else "service",
        "folder": str(space.folder),
        "audit_db": space.audit_url_shown,
        "checkpoints": str(space.checkpoints),
        "log_public_key": str(space.log_public_key),
    }


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True)
@db_option
def tenants_list(as_json: bool, db_url: str | None) -> None:
    """List the tenants: name, id, created, policy pack and keys (own or the service's)."""
    with _open(db_url) as store:
        found = [_describe(t, db_url) for t in store.list_tenants()]
    if as_json:
        print_json(found)
        return
    for t in found:
        keys = f"signing:{t['signing']},watermark:{t['watermark_key']}"
        click.echo(f"{t['name']}\t{t['id']}\t{t['created_at']}\t{t['policy'] or '-'}\t{keys}")


@tenants.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@db_option
def tenants_show(name: str, as_json: bool, db_url: str | None) -> None:
    """Show tenant NAME: its pack, its keys (own or the service's), its audit database and checkpoint
    folder, and the command its auditor runs to verify its chain."""
    with _open(db_url) as store:
        info = _describe(store.tenant(name), db_url)
    info["verify"] = (
        f"genguard audit verify --db '{info['audit_db']}' --checkpoint-dir '{info['checkpoints']}' "
        f"--log-public-key '{info['log_public_key']}' --read-only"
    )
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        click.echo(f"{key:16} {value if value is not None else '-'}")


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
