"""`genguard audit checkpoint / prove / check-proof / public-key`, and `audit verify --checkpoint`.

`--witnesses POLICY` (a file, see genguard.audit.witness): `audit checkpoint` asks those witnesses to cosign
the new checkpoint and writes their cosignatures into it (exit 1 when fewer than the quorum did; the
checkpoint is written all the same); `audit verify --checkpoint` also requires k of those n
witnesses' cosignatures.

pipeline/cli.py imports this module, which adds the commands to its `audit` group. Exit codes: 0 ok,
1 tampering found (the first bad entry named) or a proof that does not hold, 2 bad input (a malformed
file, an unknown entry), 4 database unreachable. check-proof never opens a database.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from genguard.guard.errors import BadInputError
from genguard.pipeline.cli_common import db_option, open_store

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from genguard.audit.store import AuditStore

_PUBLIC_KEY_HELP = "Trusted signer's public key (PEM; default: the local checkpoint key's)."
WITNESSES_HELP = "Witness policy file ('witness <vkey> [<url>]' lines, 'quorum <k>'); see audit.witness."


def _refuse_existing(path: Path | None) -> None:
    """Checkpoints and proofs are evidence: never overwrite one (checked before any work is done)."""
    if path is not None and path.exists():
        raise BadInputError(f"--out {path}: expected a new file, found an existing one")


def _write_new(path: Path, text: str) -> None:
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise BadInputError(f"--out {path}: expected a new file, found an existing one") from None
    except OSError as exc:
        raise BadInputError(f"--out {path}: expected a writable path, found {exc.strerror}") from None


def _public_key(path: Path | None) -> Ed25519PublicKey | None:
    from genguard.audit.checkpoint import load_public_key

    return None if path is None else load_public_key(path)


@click.command("checkpoint")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Write the checkpoint to this new file."
)
@click.option("--witnesses", type=click.Path(path_type=Path), default=None, help=WITNESSES_HELP)
@db_option
def audit_checkpoint(out: Path | None, witnesses: Path | None, db_url: str | None) -> None:
    """Sign (Ed25519) the Merkle tree head of the log; keep the file somewhere the database's writers cannot reach."""
    from genguard.audit.checkpoint import create_checkpoint
    from genguard.audit.witness import (
        WitnessOutcome,
        WitnessPolicy,
        request_cosignatures,
        verify_cosignatures,
    )

    _refuse_existing(out)
    policy = WitnessPolicy.read(witnesses) if witnesses is not None else None
    with open_store(db_url) as store:
        checkpoint = create_checkpoint(store)
        outcomes: tuple[WitnessOutcome, ...] = ()
        if policy is not None:
            checkpoint, outcomes = request_cosignatures(store, checkpoint, policy)
    if out is None:
        click.echo(checkpoint.to_text(), nl=False)
    else:
        _write_new(out, checkpoint.to_text())
        click.echo(
            f"checkpoint of entries 1..{checkpoint.tree_size} of {checkpoint.origin}\n"
            f"root {checkpoint.root_hash.hex()}\nkey {checkpoint.key_id}\nwritten to {out}"
        )
    if policy is None:
        return
    for outcome in outcomes:
        click.echo(f"witness {outcome.name}: {'cosigned' if outcome.cosigned else outcome.problem}", err=True)
    check = verify_cosignatures(checkpoint, policy)
    if not check.ok:
        click.echo(f"WITNESS QUORUM NOT MET: {check.summary}", err=True)
        sys.exit(1)
    click.echo(f"witnessed: {check.summary}", err=True)


@click.command("prove")
@click.argument("seq", type=click.IntRange(min=1))
@click.option(
    "--checkpoint", "checkpoint_file", type=click.Path(path_type=Path), default=None,
    help="Prove against this checkpoint's tree (the proof then carries it); default: the log as it is now.",
)  # fmt: skip
@click.option("--public-key", type=click.Path(path_type=Path), default=None, help=_PUBLIC_KEY_HELP)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Write the proof to this new file."
)
@db_option
def audit_prove(
    seq: int, checkpoint_file: Path | None, public_key: Path | None, out: Path | None, db_url: str | None
) -> None:
    """An inclusion proof of log entry SEQ, as JSON, that anyone checks offline with `audit check-proof`."""
    from genguard.audit.checkpoint import prove_inclusion, read_checkpoint, signature_problem

    _refuse_existing(out)
    checkpoint = None
    if checkpoint_file is not None:
        checkpoint = read_checkpoint(checkpoint_file)
        problem = signature_problem(checkpoint, _public_key(public_key))
        if problem is not None:
            click.echo(f"CHECKPOINT REJECTED: {problem}", err=True)
            sys.exit(1)
    with open_store(db_url) as store:
        proof = prove_inclusion(store, seq, checkpoint)
    if out is None:
        click.echo(proof.to_json(), nl=False)
        return
    _write_new(out, proof.to_json())
    click.echo(f"proof of entry {seq} in the tree of {proof.tree_size} entries written to {out}")


@click.command("check-proof")
@click.argument("proof_file", metavar="PROOF", type=click.Path(path_type=Path))
@click.option(
    "--checkpoint", "checkpoint_file", type=click.Path(path_type=Path), default=None,
    help="The checkpoint to check against (default: the one the proof carries, if its signature verifies).",
)  # fmt: skip
@click.option("--root", default=None, help="Instead of a checkpoint: a trusted root hash (hex or base64).")
@click.option("--public-key", type=click.Path(path_type=Path), default=None, help=_PUBLIC_KEY_HELP)
def audit_check_proof(
    proof_file: Path, checkpoint_file: Path | None, root: str | None, public_key: Path | None
) -> None:
    """Check an inclusion proof offline (no database): exit 0 if it holds, 1 if not."""
    from genguard.audit.checkpoint import (
        Checkpoint,
        check_inclusion_proof,
        read_checkpoint,
        read_inclusion_proof,
    )

    if checkpoint_file is not None and root is not None:
        raise BadInputError("check-proof: expected --checkpoint or --root, found both")
    proof = read_inclusion_proof(proof_file)
    anchor: Checkpoint | bytes | None = None
    if checkpoint_file is not None:
        anchor = read_checkpoint(checkpoint_file)
    elif root is not None:
        anchor = _root(root)
    result = check_inclusion_proof(proof, anchor, _public_key(public_key))
    if not result.ok:
        click.echo(f"PROOF FAILS: {result.reason}", err=True)
        sys.exit(1)
    click.echo(f"ok: entry {result.seq} is in the tree of {result.tree_size} entries ({result.anchor})")


def _root(text: str) -> bytes:
    import base64
    import binascii

    try:
        root = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        root = b""
    if len(root) != 32:
        raise BadInputError(f"--root: expected a 32-byte hash in hex or base64, found {text[:80]!r}")
    return root


@click.command("public-key")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the PEM to this new file.")
@db_option
def audit_public_key(out: Path | None, db_url: str | None) -> None:
    """The checkpoint signing key's public half (PEM), to give to verifiers; creates the key on first use.
    The signed-note verifier key (named by the log's origin) goes to stderr."""
    from genguard.audit.checkpoint import checkpoint_key, log_origin, public_key_pem, verifier_key

    _refuse_existing(out)
    key = checkpoint_key()
    if out is None:
        click.echo(public_key_pem(key), nl=False)
    else:
        _write_new(out, public_key_pem(key))
        click.echo(f"public key written to {out}")
    with open_store(db_url) as store:
        origin = log_origin(store)
    click.echo(f"signed-note verifier key: {verifier_key(key.public_key(), origin)}", err=True)


def verify_with_checkpoint(
    store: AuditStore, checkpoint_file: Path, public_key: Path | None, witnesses: Path | None = None
) -> None:
    """`audit verify --checkpoint`: print the outcome; exit 1 naming the first bad entry when tampered,
    or when fewer witnesses than the policy's quorum cosigned the checkpoint."""
    from genguard.audit.checkpoint import read_checkpoint, verify_against_checkpoint
    from genguard.audit.witness import WitnessPolicy, verify_cosignatures

    policy = WitnessPolicy.read(witnesses) if witnesses is not None else None
    checkpoint = read_checkpoint(checkpoint_file)
    report = verify_against_checkpoint(store, checkpoint, _public_key(public_key))
    if report.ok:
        assert report.chain is not None
        click.echo(
            f"ok: {report.chain.entries_checked} entries, chain intact; the checkpoint of entries "
            f"1..{report.tree_size} (key {checkpoint.key_id[:16]}) still holds; consistency proof "
            f"{report.tree_size} -> {report.log_size} verified ({len(report.consistency_proof)} hashes)"
        )
        if policy is not None:
            check = verify_cosignatures(checkpoint, policy)
            if not check.ok:
                detail = "; ".join(check.problems)
                click.echo(f"WITNESSES: {check.summary}: {detail}", err=True)
                sys.exit(1)
            click.echo(f"witnessed: {check.summary}")
        return
    if not report.signature_valid or report.first_bad_seq is None and report.chain is None:
        click.echo(f"CHECKPOINT REJECTED: {report.reason}", err=True)
    elif report.first_bad_seq is None:
        click.echo(f"BROKEN: {report.reason}", err=True)
    else:
        where = str(report.first_bad_seq)
        if report.first_bad_upto != report.first_bad_seq:
            where += f"..{report.first_bad_upto}"
        click.echo(f"TAMPERED at entry {where}: {report.reason}", err=True)
    sys.exit(1)


def verify_latest_checkpoint(store: AuditStore, folder: Path, public_key: Path | None) -> None:
    """`audit verify` without --checkpoint: check the newest automatic checkpoint in `folder` and say
    how old it is; exit 1 when it no longer holds. None found: said, not a failure (nothing to compare)."""
    from datetime import UTC, datetime

    from genguard.audit.checkpoint import latest_checkpoint, verify_against_checkpoint

    latest = latest_checkpoint(folder)
    if latest is None:
        click.echo(
            f"no automatic checkpoint found in {folder}: entries cut from the tail back to a signed batch "
            "would not show (see docs/audit-log.md)"
        )
        return
    checkpoint, path = latest
    age = datetime.now(UTC) - checkpoint.timestamp
    report = verify_against_checkpoint(store, checkpoint, _public_key(public_key))
    what = f"latest automatic checkpoint {path.name} (entries 1..{checkpoint.tree_size}, {_age(age.total_seconds())} old)"
    if report.ok:
        click.echo(f"{what}: still holds; consistency proof {report.tree_size} -> {report.log_size} verified")
        return
    if not report.signature_valid or report.first_bad_seq is None:
        click.echo(f"{what}: REJECTED: {report.reason}", err=True)
    else:
        where = str(report.first_bad_seq)
        if report.first_bad_upto != report.first_bad_seq:
            where += f"..{report.first_bad_upto}"
        click.echo(f"TAMPERED at entry {where}: {report.reason} ({what})", err=True)
    sys.exit(1)


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} seconds"
