"""The plugin's own error types, and what a botocore error means.

Nothing here knows Cloudify: the access layer (``ec2.aws``), the client
factory and the property parsers raise these, and the one error boundary
(``ec2.utils.ec2_operation``) turns them into the workflow engine's
exceptions, prefixed with the node's label.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

# Error codes that mean "the bucket is empty": the caller is throttled (ec2.pacing paces after one).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
    }
)
# Error codes that mean "EC2 is busy or throttling us": worth another try later.
RETRYABLE_CODES = THROTTLING_CODES | frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

# Dry-run refusals about the credentials, not the request.
PERMISSION_CODES = frozenset(
    {"UnauthorizedOperation", "AuthFailure", "AccessDenied", "OptInRequired", "Blocked", "PendingVerification"}
)
# Dry-run refusals that say an account quota or the capacity is used up.
QUOTA_CODES = frozenset(
    {
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "InsufficientInstanceCapacity",
        "AddressLimitExceeded",
        "ResourceLimitExceeded",
        "SecurityGroupLimitExceeded",
        "KeyPairLimitExceeded",
    }
)

# The STS calls the plugin makes (an assumed role's, and preflight's), beside EC2's.
STS_OPERATIONS = frozenset({"AssumeRole", "GetCallerIdentity"})


class PluginError(Exception):
    """Something the operation cannot get past: fails the task for good."""


class BadInput(PluginError):
    """A property that cannot work: names the property, the problem and the fix."""

    def __init__(self, prop: str, problem: str, fix: str) -> None:
        super().__init__(f"property '{prop}' {problem}. Fix: {fix}.")
        self.prop = prop


class NotReady(Exception):
    """AWS cannot do it yet (a dependency is still being torn down, ...): try again later."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # None: the node's retry_after property


class StillWaiting(Exception):
    """A wait ran out of in-process time while the state was still changing as
    expected: the workflow engine should run the operation again later."""


class UnexpectedState(PluginError):
    """A wait saw a state that is neither the one it waits for nor one on the way there."""


def answer_code(response: Any) -> str:
    """The error code in a botocore hook's ``response`` ((http response, parsed)), or ""."""
    parsed = response[1] if response and len(response) > 1 else None
    return str(((parsed if isinstance(parsed, dict) else {}).get("Error") or {}).get("Code") or "")


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def describe(error: Exception) -> tuple[bool, str]:
    """(retryable, text) for an exception botocore raised: throttling, 5xx and
    lost connections are retryable; anything else is not."""
    if isinstance(error, ClientError):
        code = error_code(error)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = error.response.get("Error", {}).get("Message") or str(error)
        operation = getattr(error, "operation_name", "") or "call"
        label = code or f"HTTP {status}"
        service = "STS" if operation in STS_OPERATIONS else "EC2"
        return code in RETRYABLE_CODES or status >= 500, f"{service} {operation} failed: {label}: {message}"
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return False, (
            f"cannot reach EC2: {error}. Fix: set credentials and a region in the node's 'aws_config' "
            "property, or in the environment or shared AWS files"
        )
    if isinstance(error, (BotoConnectionError, HTTPClientError)):
        return True, f"EC2 did not get through: {error}"
    if isinstance(error, BotoCoreError):
        return False, f"EC2 call failed: {error}"
    return False, str(error)


def role_refused(role_arn: str, error: ClientError) -> BadInput:
    """AssumeRole refused (AccessDenied, a wrong external id, ...): names the role and the fix."""
    message = error.response.get("Error", {}).get("Message") or str(error)
    return BadInput(
        "aws_config",
        f"names role '{role_arn}', which AWS refused to let these credentials assume "
        f"({error_code(error) or 'AssumeRole failed'}: {message})",
        "allow these credentials sts:AssumeRole on that role (their IAM policy) and trust them in the role's "
        "trust policy, and give the external_id that trust policy asks for",
    )


class AlreadyExists(PluginError):
    """A create answered Duplicate: the name is taken (perhaps by this node instance's own earlier call).
    ``resent``: an earlier attempt of the same call, whose answer was lost, may have made it."""

    def __init__(self, message: str, resent: bool = False) -> None:
        super().__init__(message)
        self.resent = resent


def check_dry_run(operation: str, refusal: ClientError | None, prop: str, fix: str) -> None:
    """Raises the error for a dry run AWS refused. The resource's own Duplicate
    code passes: whether the name may be taken is validation's existence check."""
    if refusal is None:
        return
    code = error_code(refusal)
    if code in ("InvalidKeyPair.Duplicate", "InvalidGroup.Duplicate"):
        return
    said = f"AWS refuses a dry run of {operation} ({code}: {refusal.response.get('Error', {}).get('Message', '')})"
    if code in PERMISSION_CODES:
        raise BadInput(
            "aws_config",
            f"gives credentials that may not call {operation}: {said}",
            f"allow ec2:{operation} to these credentials (IAM policy), or give other credentials in aws_config",
        )
    if code in QUOTA_CODES:
        raise PluginError(
            f"{said}: a quota or the capacity is used up. Fix: free some, ask AWS for a higher quota "
            "(Service Quotas), or choose another instance type or zone"
        )
    raise BadInput(prop, f"makes a {operation} request that {said}", fix)
