"""API keys and roles: `Authorization: Bearer <key>` on every /v1 endpoint but the public verify.

Roles: `generator` (generations, their files, the OpenAI images API), `reviewer` (the review queue),
`auditor` (the tenant's records, reports, and its own chain's checkpoints and proofs), `admin` (tenants and
keys, today through `genguard tenants` / `genguard apikeys`; review, records, reports, checkpoints and
proofs). Every valid key may ask `GET /v1/me`.
401: no key, an unknown, revoked or expired key; 403: a valid key whose role may not call the endpoint.
The key's id (never the key) is what the request's logs and the generation's record carry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from genguard.audit.service_store import KeyState, ServiceStore
from genguard.pipeline.service.errors import ApiError


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its tenant and role."""

    key_id: str
    tenant_id: str
    tenant_name: str
    role: str

    @property
    def actor(self) -> str:
        """What the audit record names as the generation's actor: the tenant's name first, so that the
        audit store's tenant filters (actors "<tenant>" and "<tenant>/...") find it."""
        return f"{self.tenant_name}/apikey:{self.key_id}"

    @property
    def tenant(self) -> str:
        """The tenant's name, as the audit store's `tenant` filters take it."""
        return self.tenant_name

    @property
    def reviewer(self) -> str:
        """What a review decision made with this key records as its reviewer: the key's id."""
        return f"apikey:{self.key_id}"


_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def authenticate(store: ServiceStore, request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if not header:
        raise ApiError(
            401,
            "missing_api_key",
            "Authorization: expected 'Bearer <API key>', found no header",
            kind="authentication_error",
            headers=_CHALLENGE,
        )
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(
            401,
            "invalid_api_key",
            "Authorization: expected 'Bearer <API key>', found another scheme or an empty key",
            kind="authentication_error",
            headers=_CHALLENGE,
        )
    check = store.authenticate(presented.strip())
    if check.state is not KeyState.VALID or check.key is None:
        what = {
            KeyState.UNKNOWN: "an unknown key",
            KeyState.REVOKED: "a revoked key",
            KeyState.EXPIRED: "an expired key",
        }[check.state]
        raise ApiError(
            401,
            f"{check.state.value}_api_key" if check.state is not KeyState.UNKNOWN else "invalid_api_key",
            f"API key: expected a valid key, found {what}",
            kind="authentication_error",
            headers=_CHALLENGE,
        )
    key = check.key
    request.state.key_id = key.id  # for the request's log line
    return Principal(key_id=key.id, tenant_id=key.tenant_id, tenant_name=key.tenant_name, role=key.role)


def requires(store: ServiceStore, *roles: str) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the caller's principal, when its role is one of `roles` (none: any role)."""

    def dependency(request: Request) -> Principal:
        principal = authenticate(store, request)
        if roles and principal.role not in roles:
            raise ApiError(
                403,
                "forbidden_role",
                f"role: expected {' or '.join(roles)} for {request.method} {request.url.path}, "
                f"found {principal.role}",
                kind="permission_error",
            )
        return principal

    return dependency
