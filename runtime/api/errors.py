"""What can go wrong with a request, independent of the transport. Each front end maps an
ErrorKind to its own status (gRPC code, HTTP status + OpenAI error type)."""
from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"        # the request itself is wrong (names the field)
    NOT_FOUND = "not_found"                      # another model than the one served
    FAILED_PRECONDITION = "failed_precondition"  # valid request this engine cannot serve
    RESOURCE_EXHAUSTED = "resource_exhausted"    # slots busy and queue full; request too large
    UNAVAILABLE = "unavailable"                  # draining / shutting down
    UNAUTHENTICATED = "unauthenticated"          # bearer token missing or wrong
    MODEL_OUTPUT = "model_output"                # the model's tokens are not valid harmony
    INTERNAL = "internal"                        # a fault of ours or of the engine


class ApiError(Exception):
    """A refused or failed request: a kind and a message naming the offending field."""

    def __init__(self, kind: ErrorKind, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def invalid(message: str) -> ApiError:
    return ApiError(ErrorKind.INVALID_ARGUMENT, message)


def as_api_error(exc: BaseException) -> ApiError:
    """The ApiError a front end reports when `exc` ends a request."""
    from gptoss_edge.runtime.engine.scheduler import Overloaded, SchedulerClosed

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Overloaded):
        return ApiError(ErrorKind.RESOURCE_EXHAUSTED, str(exc))
    if isinstance(exc, SchedulerClosed):
        return ApiError(ErrorKind.UNAVAILABLE, str(exc))
    return ApiError(ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}")
