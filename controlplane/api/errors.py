"""API errors, answered as Kubernetes ``Status`` objects.

Every failure a client can cause is an ``ApiError`` carrying the HTTP code, the Status
``reason`` and, for validation failures, ``causes`` (``{"reason", "message", "field"}``) as
Kubernetes' ``StatusDetails`` does; the handlers turn it into the response body.
"""

from __future__ import annotations

import json
from typing import Any

Cause = dict[str, str]


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        causes: list[Cause] | None = None,
        kind: str = "",
        name: str = "",
        group: str = "",
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.causes = causes or []
        self.kind = kind
        self.name = name
        self.group = group
        self.retry_after = retry_after

    def status(self) -> dict[str, Any]:
        """The ``Status`` object for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body


def cause(reason: str, field: str, message: str) -> Cause:
    """One StatusCause; ``reason`` is a Kubernetes CauseType such as ``FieldValueRequired``."""
    return {"reason": reason, "message": message, "field": field}


def _show(value: Any) -> str:
    """A value as Kubernetes prints it in a cause (Go's %q of strings, JSON otherwise)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def required(field: str) -> Cause:
    return cause("FieldValueRequired", field, "Required value")


def invalid_value(field: str, value: Any, detail: str) -> Cause:
    return cause("FieldValueInvalid", field, f"Invalid value: {_show(value)}: {detail}")


def not_supported(field: str, value: Any, allowed: list[str]) -> Cause:
    choices = ", ".join(f'"{a}"' for a in allowed)
    return cause("FieldValueNotSupported", field,
                 f"Unsupported value: {_show(value)}: supported values: {choices}")


def forbidden_field(field: str, detail: str) -> Cause:
    return cause("FieldValueForbidden", field, f"Forbidden: {detail}")


def duplicate(field: str, value: Any) -> Cause:
    return cause("FieldValueDuplicate", field, f"Duplicate value: {_show(value)}")


def _resource(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(group: str, resource: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_resource(group, resource)} "{name}" not found',
                    kind=resource, name=name, group=group)


def already_exists(group: str, resource: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{_resource(group, resource)} "{name}" already exists',
                    kind=resource, name=name, group=group)


def conflict(group: str, resource: str, name: str, detail: str) -> ApiError:
    return ApiError(
        409, "Conflict",
        f'Operation cannot be fulfilled on {_resource(group, resource)} "{name}": {detail}',
        kind=resource, name=name, group=group,
    )


def invalid(group: str, kind: str, name: str, causes: list[Cause]) -> ApiError:
    """422 Invalid: Kubernetes' message lists every cause after the object's name."""
    listed = ", ".join(
        f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes
    )
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: [{listed}]' if len(causes) > 1
                    else f'{kind} "{name}" is invalid: {listed}',
                    causes=causes, kind=kind, name=name, group=group)


def bad_request(message: str, causes: list[Cause] | None = None) -> ApiError:
    return ApiError(400, "BadRequest", message, causes=causes)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    f"the body of the request was in an unknown format "
                    f"({content_type or 'none'}); accepted media types include: application/json, "
                    "application/yaml, application/json-patch+json, application/merge-patch+json, "
                    "application/strategic-merge-patch+json, application/apply-patch+yaml")


def too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge",
                    f"the request body is larger than the limit of {limit} bytes")


def not_acceptable(accept: str) -> ApiError:
    return ApiError(406, "NotAcceptable", f"only the following media types are accepted: "
                    f"application/json, application/yaml (asked for {accept})")


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(user: str, verb: str, resource: str, group: str, namespace: str,
              detail: str = "") -> ApiError:
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    res = _resource(group, resource)
    msg = (f'{res} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
           f'in API group "{group}"{where}')
    if detail:
        msg += f": {detail}"
    return ApiError(403, "Forbidden", msg, kind=resource, group=group)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def too_many_requests(retry_after: int = 1) -> ApiError:
    return ApiError(429, "TooManyRequests", "too many requests, please try again later",
                    retry_after=retry_after)


def unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message, retry_after=1)


def timeout(message: str) -> ApiError:
    return ApiError(504, "Timeout", message, retry_after=1)
