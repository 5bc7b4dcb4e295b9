"""OpenTelemetry traces and metrics for the service, exported only when configured.

Configured when `GENGUARD_OTEL=otlp` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set: spans and
metrics then go to the OTLP/HTTP exporter, which reads the standard `OTEL_EXPORTER_OTLP_*` variables
(endpoint, headers, timeout). Otherwise `Telemetry.disabled()` does nothing and imports nothing, so the
core and a service without the SDK never need it.

What is emitted:

- a span per HTTP request (`HTTP <METHOD> <route>`, with the request id and the status) and, per job, a
  `genguard.job` span with one child span per Governor stage (admit, plan, sample, check, release,
  commit);
- `genguard.stage.duration` (histogram, seconds, by `stage`);
- `genguard.decisions` (counter, by `action` and `category`; a decision without a category counts once
  under `category="none"`);
- `genguard.verify.verdicts` (counter, by `verdict`) for `/v1/verify` and `/v1/matches/byContent`.

No attribute carries a prompt, a key or a tenant's name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from genguard.guard.errors import BadInputError

SERVICE_NAME = "genguard"
OTEL_ENV = "GENGUARD_OTEL"


def configured() -> bool:
    """Whether the environment asks for export (`GENGUARD_OTEL=otlp` or an OTLP endpoint)."""
    wanted = os.environ.get(OTEL_ENV, "").strip().lower()
    if wanted not in ("", "otlp", "none", "off"):
        raise BadInputError(f"{OTEL_ENV}: expected 'otlp', 'none' or unset, found {wanted!r}")
    if wanted in ("none", "off"):
        return False
    return wanted == "otlp" or bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())


class Telemetry:
    """The service's tracer and instruments; every method is a cheap no-op when disabled."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.enabled = tracer_provider is not None and meter_provider is not None
        if not self.enabled:
            return
        self._tracer = tracer_provider.get_tracer("genguard.service")
        meter = meter_provider.get_meter("genguard.service")
        self._stage_seconds = meter.create_histogram(
            "genguard.stage.duration", unit="s", description="Time spent in one Governor stage of a job."
        )
        self._decisions = meter.create_counter(
            "genguard.decisions", description="Prompt policy decisions of jobs, by action and category."
        )
        self._verdicts = meter.create_counter(
            "genguard.verify.verdicts", description="Public verification verdicts."
        )

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls()

    @classmethod
    def from_env(cls) -> Telemetry:
        """OTLP export when `configured()`, else disabled. Needs the serve extra's SDK and exporter."""
        if not configured():
            return cls.disabled()
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise BadInputError(
                f"{OTEL_ENV}: export asked for, expected the serve extra's OpenTelemetry SDK and OTLP "
                f"exporter (pip install 'genguard[serve]'), found {exc.name} missing"
            ) from None
        return cls.with_sdk(
            span_processors=[BatchSpanProcessor(OTLPSpanExporter())],
            metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
        )

    @classmethod
    def with_sdk(cls, span_processors: Sequence[Any], metric_readers: Sequence[Any]) -> Telemetry:
        """SDK providers of the service's own (the global ones are left alone) with these processors
        and readers: the OTLP ones, or a test's in-memory exporter and reader."""
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        resource = Resource.create({"service.name": SERVICE_NAME})
        tracer_provider = TracerProvider(resource=resource)
        for processor in span_processors:
            tracer_provider.add_span_processor(processor)
        meter_provider = MeterProvider(resource=resource, metric_readers=list(metric_readers))
        return cls(tracer_provider, meter_provider)

    # ------------------------------------------------------------------------------------- spans

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Any]:
        """A span (a child of the current one); None is yielded when disabled."""
        if not self.enabled:
            yield None
            return
        with self._tracer.start_as_current_span(name, attributes=_clean(attributes)) as span:
            yield span

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """One Governor stage: its span and its duration in the histogram (also when it raises)."""
        if not self.enabled:
            yield
            return
        started = time.perf_counter()
        try:
            with self._tracer.start_as_current_span(f"genguard.stage.{name}", attributes={"stage": name}):
                yield
        finally:
            self._stage_seconds.record(time.perf_counter() - started, {"stage": name})

    # ----------------------------------------------------------------------------------- metrics

    def decision(self, action: str, categories: Sequence[str]) -> None:
        if self.enabled:
            for category in categories or ("none",):
                self._decisions.add(1, {"action": action, "category": category})

    def verdict(self, verdict: str) -> None:
        if self.enabled:
            self._verdicts.add(1, {"verdict": verdict})

    def shutdown(self) -> None:
        """Flush and stop the exporters (the service's stop)."""
        if self.enabled:
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None}


__all__ = ["OTEL_ENV", "Telemetry", "configured"]
