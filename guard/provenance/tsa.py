"""The RFC 3161 time-stamp authority that Content Credentials are time-stamped by.

A manifest whose signature carries a trusted timestamp stays valid after the signing certificate
expires (the validator checks the certificate at the TSA's time, not at reading time). c2pa sends
the query itself; genguard only configures the URL and decides what a failure means.

Configuration: GENGUARD_TSA_URL (http or https URL; unset: no timestamps) and GENGUARD_TSA_OPTIONAL
("1"/"true"/"yes": sign without a timestamp when the TSA cannot be reached, and the record says so;
otherwise such a release fails closed). Readers trust a timestamp only when the TSA's root is among
their trust anchors (GENGUARD_TRUST_ANCHORS may hold it beside the signing root).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from genguard.guard.errors import BadInputError

_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"", "0", "false", "no", "off"})


class TimestampState:
    """What a release's record says about its timestamp (strings, as stored)."""

    TIMESTAMPED = "timestamped"  # an RFC 3161 token from the configured TSA is in the signature
    SKIPPED = "skipped"  # TSA configured as optional and unreachable: signed without a timestamp
    OFF = "off"  # no TSA configured


@dataclass(frozen=True)
class TsaConfig:
    """`url`: the TSA endpoint; `required`: a release without a timestamp is refused."""

    url: str = field(repr=False)  # may carry an access token: `display_url` is the printable form
    required: bool = True

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInputError(
                f"GENGUARD_TSA_URL: expected an http:// or https:// URL with a host, found {redact_url(self.url)!r}"
            )

    @property
    def display_url(self) -> str:
        """The URL without any user:password part (safe for logs, errors and records)."""
        return redact_url(self.url)

    def scrub(self, text: str) -> str:
        """`text` (an error from c2pa) with this URL's credentials and query taken out."""
        text = text.replace(self.url, self.display_url)
        parts = urlsplit(self.url)
        for secret in (parts.password, parts.username, parts.query):
            if secret:
                text = text.replace(secret, "***")
        return text

    @classmethod
    def from_env(cls) -> TsaConfig | None:
        """The configured TSA, or None when GENGUARD_TSA_URL is unset or empty."""
        url = os.environ.get("GENGUARD_TSA_URL", "").strip()
        optional = os.environ.get("GENGUARD_TSA_OPTIONAL", "").strip().lower()
        if optional not in _TRUE | _FALSE:
            raise BadInputError(
                f"GENGUARD_TSA_OPTIONAL: expected one of 1/true/yes or 0/false/no, found {optional!r}"
            )
        if not url:
            return None
        return cls(url, required=optional not in _TRUE)


def redact_url(url: str) -> str:
    """`url` with credentials and query removed: a TSA URL may carry an access token."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
