"""`genguard keys`: create and show the Content Credentials signing keys.

pipeline/cli.py imports this module, which adds the group to its `cli`. Light imports only.
Nothing here prints key material: paths, names, dates and fingerprints only.
"""

from __future__ import annotations

import json
import os

import click

from genguard.guard.errors import BadInputError


@click.group("keys")
def keys_group() -> None:
    """Content Credentials signing keys (C2PA)."""


@keys_group.command("init")
@click.option(
    "--force",
    is_flag=True,
    help="Replace existing keys (images signed before stay verifiable "
    "only while the old root-ca.pem stays among the trust anchors).",
)
def keys_init(force: bool) -> None:
    """Create a development root CA and an ES256 signing certificate under $GENGUARD_HOME/keys/c2pa."""
    from genguard.guard.provenance import keys  # c2pa loads with it: not for every CLI command

    created = keys.init_keys(force=force)
    click.echo(f"created development signing keys in {created.directory}")
    click.echo(f"  private key (0600)   {created.files.key}")
    click.echo(f"  certificate chain    {created.files.chain}")
    click.echo(f"  root CA key (0600)   {created.root_key}")
    click.echo(f"  trust anchor         {created.files.trust_anchors}")
    click.echo(f"  signing certificate  sha256 {created.fingerprint}")
    click.echo(
        "development keys: trusted by nobody else. Give root-ca.pem to verifiers as a trust anchor, "
        "or configure your organisation's key (GENGUARD_SIGNING_KEY, GENGUARD_SIGNING_CHAIN, "
        "GENGUARD_TRUST_ANCHORS)."
    )
    if os.environ.get("GENGUARD_SIGNING_KEY"):
        click.echo("note: GENGUARD_SIGNING_KEY is set, so these new keys are not the ones used", err=True)


@keys_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def keys_show(as_json: bool) -> None:
    """Show the configured signing certificate and trust anchors, and check them."""
    from genguard.guard.provenance import keys

    files = keys.configured_key_files()
    if not files.key.exists() and not os.environ.get("GENGUARD_SIGNING_KEY"):
        raise BadInputError(
            f"{files.key}: expected a signing key, found none (run `genguard keys init`; "
            "`genguard generate` also creates development keys on first use)"
        )
    problem = None
    try:
        keys.LocalKeySigner.from_files(files.key, files.chain)
    except BadInputError as error:
        problem = str(error)
    chain = keys.load_certificates(files.chain.read_bytes(), str(files.chain)) if files.chain.exists() else []
    anchors = keys.trust_anchors_from_config()
    anchor_prints = (
        {keys.certificate_fingerprint(c) for c in keys.load_certificates(anchors, "trust anchors")}
        if anchors
        else set()
    )
    leaf = chain[0] if chain else None
    info = {
        "key": str(files.key),
        "chain": str(files.chain),
        "trust_anchors": str(files.trust_anchors) if anchors else None,
        "subject": leaf.subject.rfc4514_string() if leaf else None,
        "issuer": leaf.issuer.rfc4514_string() if leaf else None,
        "not_before": leaf.not_valid_before_utc.isoformat() if leaf else None,
        "not_after": leaf.not_valid_after_utc.isoformat() if leaf else None,
        "fingerprint_sha256": keys.certificate_fingerprint(leaf) if leaf else None,
        "chain_has_trust_anchor": any(keys.certificate_fingerprint(c) in anchor_prints for c in chain),
        "problem": problem,
    }
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
    else:
        for name, value in info.items():
            if name == "problem":
                continue  # raised below as the error line
            click.echo(f"{name:22} {value if value is not None else '-'}")
    if problem is not None:
        raise BadInputError(problem)
