"""The service's JSON log lines, captured for assertions (what a request logged, that no key leaked)."""

from __future__ import annotations

import logging

from genguard.pipeline.service.app import JsonFormatter


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
