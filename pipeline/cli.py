"""The `genguard` command line: the root group, every command registered here, and the entry point.

Only light modules are imported at load: torch and diffusers are imported inside the commands that
sample, so `genguard verify`, `policy` and `audit` start fast on a machine without them.
Exit codes: 0 done, 1 a check found the chain or a quorum broken, 2 usage or bad input, 3 blocked by
policy, 4 infrastructure failure, 5 generate withheld every image.
"""

from __future__ import annotations

import sys

import click

from genguard.guard.errors import GenguardError
from genguard.pipeline import (
    cli_audit,
    cli_checkpoint,
    cli_compliance,
    cli_doctor,
    cli_generate,
    cli_keys,
    cli_policy,
    cli_repair,
    cli_review,
    cli_serve,
    cli_tenants,
    cli_verify,
    cli_watermark,
)
from genguard.pipeline.cli_common import configure_output


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genguard")
@click.option(
    "-v", "--verbose", is_flag=True, help="Show the model libraries' loading bars, advice and warnings."
)
def cli(verbose: bool) -> None:
    """genguard: governed image generation, provenance and audit."""
    configure_output(verbose)


# Every command, in one place.
cli.add_command(cli_generate.generate)
cli.add_command(cli_verify.verify)
cli.add_command(cli_policy.policy)
cli.add_command(cli_watermark.watermark)
cli.add_command(cli_audit.audit)
for audit_command in (
    cli_checkpoint.audit_checkpoint,
    cli_checkpoint.audit_prove,
    cli_checkpoint.audit_check_proof,
    cli_checkpoint.audit_public_key,
    cli_repair.audit_repair,
):
    cli_audit.audit.add_command(audit_command)
cli.add_command(cli_review.review)
cli.add_command(cli_review.report)
cli_review.report.add_command(cli_compliance.report_compliance)
cli.add_command(cli_keys.keys_group)
cli.add_command(cli_doctor.doctor)
cli.add_command(cli_serve.serve)
cli.add_command(cli_tenants.tenants)
cli.add_command(cli_tenants.apikeys)


def main(argv: list[str] | None = None) -> None:
    """Entry point: GenguardError becomes a one-line message and its exit code."""
    try:
        code = cli.main(args=argv, prog_name="genguard", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code in (1, 2) else exc.exit_code)
    except GenguardError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
