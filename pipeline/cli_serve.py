"""`genguard serve`: the HTTP service (needs the `serve` extra: pip install 'genguard[serve]')."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from types import FrameType

import click

from genguard.guard.errors import BadInputError
from genguard.pipeline.cli_common import db_option


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command()
@db_option
@click.option(
    "--model", default="embedded:tiny-sd", show_default=True, help="Hub id, local path or embedded:tiny-*."
)
@click.option("--policy", default="default", show_default=True, help="Shipped pack name or a YAML path.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(0, 64), help="Worker threads.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--files",
    "files_dir",
    default=None,
    type=click.Path(path_type=Path, file_okay=False),
    help="Where released files are kept (default: service-files under $GENGUARD_HOME).",
)
@click.option(
    "--grace",
    "grace_s",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="On SIGTERM/SIGINT: seconds a running job has to finish (one that has not started sampling is "
    "put back in the queue; one still sampling after this is recorded failed).",
)
@click.option(
    "--verify-burst",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    help="Public verify and lookups: requests one client address may make at once (token bucket).",
)
@click.option(
    "--verify-rate",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Public verify and lookups: the bucket's refill, requests per second per client address.",
)
@click.option(
    "--dev-keys/--no-dev-keys",
    default=True,
    show_default=True,
    help="On a database without tenants, and only on a loopback host: create tenant 'dev' with a "
    "generator and an admin key, printed once.",
)
def serve(
    db_url: str | None,
    model: str,
    policy: str,
    workers: int,
    device: str,
    host: str,
    port: int,
    files_dir: Path | None,
    grace_s: float,
    verify_burst: int,
    verify_rate: float,
    dev_keys: bool,
) -> None:
    """Run the service: OpenAPI schema at /openapi.json, endpoints under /v1, JSON logs on stderr."""
    try:
        import uvicorn

        from genguard.pipeline.service.app import create_app, open_context
        from genguard.pipeline.service.context import ServiceConfig
        from genguard.pipeline.service.jobs import WorkerSettings
    except ImportError as exc:
        raise BadInputError(
            f"serve: expected the serve extra to be installed (pip install 'genguard[serve]'), found {exc.name} "
            "missing"
        ) from None
    from genguard.guard.config import genguard_home
    from genguard.guard.policy import load_pack

    load_pack(policy)  # a bad pack fails now, not at the first job
    config = ServiceConfig(
        db_url=db_url,
        files_dir=files_dir if files_dir is not None else genguard_home() / "service-files",
        worker=WorkerSettings(model=model, policy=policy, device=device),
        workers=workers,
        shutdown_grace_s=grace_s,
        verify_burst=verify_burst,
        verify_per_second=verify_rate,
    )
    ctx = open_context(config)
    if dev_keys and not ctx.store.list_tenants():
        if _loopback(host):
            from genguard.audit.tenant_spaces import create_tenant

            create_tenant(ctx.store, db_url, "dev")
            for role in ("generator", "admin"):
                issued = ctx.store.issue_key("dev", role, label="development key")
                click.echo(f"development {role} key (shown once): {issued.secret}", err=True)
        else:
            click.echo(
                "note: no tenants yet; create one with `genguard tenants create NAME` and a key with "
                "`genguard apikeys create --tenant NAME --role generator`",
                err=True,
            )
    app = create_app(config, ctx)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            ctx.runner.drain()  # stop claiming now: the server's own drain of connections comes first
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=max(1, round(grace_s)),  # open ?wait= requests end within the grace
        )
    )
    server.run()
