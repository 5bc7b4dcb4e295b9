"""The service's one error type: a status, a code and a message that names what was wrong."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered as `{"error": {...}}` (the OpenAI API's shape) with `status`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        kind: str = "invalid_request_error",
        categories: list[str] | None = None,
        generation_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.kind = kind
        self.categories = categories
        self.generation_id = generation_id
        self.headers = headers or {}


def not_found(what: str, value: str) -> ApiError:
    """404 for anything absent or another tenant's: the two are not told apart."""
    return ApiError(404, "not_found", f"{what}: expected an existing {what} of yours, found {value!r}")
