"""Errors a client can see, each carrying its HTTP status and OpenAI ``type``/``code``.

::

    HearthError
    ├── InvalidRequest           400 invalid_request_error
    │   ├── UnsupportedParameter 400 (code: unsupported_parameter)
    │   ├── ContextLengthExceeded 400 (code: context_length_exceeded)
    │   └── WrongModelTask       400 (code: wrong_model_task; chat on an embedding model)
    ├── AuthenticationError      401 authentication_error (code: invalid_api_key; WWW-Authenticate)
    ├── HostNotAllowed           403 permission_error (code: host_not_allowed)
    ├── NotFound                 404 not_found_error
    │   └── ModelNotFound        404 (code: model_not_found)
    ├── MethodNotAllowed         405
    ├── QueueFull                429 rate_limit_error (Retry-After)
    ├── ModelUnavailable         503 service_unavailable (Retry-After)
    ├── RequestTimeout           504 timeout_error (code: request_timeout, first_token_timeout)
    └── InternalError            500 server_error (never the exception text of a bug)

Errors travel from the engine thread to the HTTP side as values and are raised there.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HearthError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross from a runner process in pickled events: keep every field.
        kwargs = {"param": self.param, "code": self.code, "retry_after": self.retry_after}
        return (_rebuild, (type(self), self.message, kwargs))

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(self.retry_after)}


class InvalidRequest(HearthError):
    status = 400
    type = "invalid_request_error"


class UnsupportedParameter(InvalidRequest):
    default_code = "unsupported_parameter"


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class WrongModelTask(InvalidRequest):
    """The model is loaded for another task (models.toml ``task``): a chat for an
    embedding model, embeddings from a model that generates."""

    default_code = "wrong_model_task"


class AuthenticationError(HearthError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "WWW-Authenticate": "Bearer"}


class HostNotAllowed(HearthError):
    """The Host header names a host this server does not answer for (DNS rebinding)."""

    status = 403
    type = "permission_error"
    default_code = "host_not_allowed"


class NotFound(HearthError):
    status = 404
    type = "not_found_error"


class ModelNotFound(NotFound):
    type = "invalid_request_error"
    default_code = "model_not_found"


class MethodNotAllowed(HearthError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class QueueFull(HearthError):
    status = 429
    type = "rate_limit_error"
    default_code = "queue_full"


class ModelUnavailable(HearthError):
    status = 503
    type = "service_unavailable"
    default_code = "model_unavailable"


class RequestTimeout(HearthError):
    """The request ran past HEARTH_REQUEST_TIMEOUT or HEARTH_FIRST_TOKEN_TIMEOUT."""

    status = 504
    type = "timeout_error"
    default_code = "request_timeout"


class InternalError(HearthError):
    status = 500
    type = "server_error"
    default_code = "internal_error"


def _rebuild(cls: type[HearthError], message: str, kwargs: dict[str, Any]) -> HearthError:
    return cls(message, **kwargs)
