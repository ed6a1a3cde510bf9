"""The one rule for failed calls and refused entries: worth another call, and may the service have
stored what it was sent? Pure: codes, HTTP statuses and what the transport says (`aws.py` translates
botocore's exceptions into these terms).
"""

from __future__ import annotations

from enum import Enum

# The service is busy: nothing of the call was stored, another call later may pass.
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "KMSThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)
# The service failed on its side (5xx): a call may or may not have stored its entries; another may pass.
SERVICE_FAULT_CODES = frozenset(
    {
        "ServiceUnavailableException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalFailureException",
        "InternalServerError",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


class CallOutcome(Enum):
    """What a failed call means for its entries."""

    NOT_STORED = "not_stored"  # throttled, or no connection: nothing was stored; send again
    UNKNOWN = "unknown"  # 5xx, timeout, dropped connection: maybe stored; sending again may duplicate
    REFUSED = "refused"  # the request itself is refused (missing target, access denied): never retried


def call_outcome(code: str, status: int) -> CallOutcome:
    """A whole call the service answered with an error `code` and HTTP `status`."""
    if code in THROTTLING_CODES or status == 429:
        return CallOutcome.NOT_STORED
    if code in SERVICE_FAULT_CODES or status >= 500:
        return CallOutcome.UNKNOWN
    return CallOutcome.REFUSED


def transport_outcome(request_sent: bool) -> CallOutcome:
    """A call that failed below HTTP: before the request went out (no connection) nothing was stored;
    after it (a read timeout, a dropped connection) the service may have stored it."""
    return CallOutcome.UNKNOWN if request_sent else CallOutcome.NOT_STORED


def entry_retryable(code: str, sender_fault: bool | None = None) -> bool:
    """One entry of a batch refused with `code`: worth sending again? Throttling and service faults
    are; SQS also says whose fault it was (`SenderFault` false: the service's, so it may pass later).
    Anything else (a bad entry, a KMS key that is disabled) is refused for good."""
    return code in THROTTLING_CODES or code in SERVICE_FAULT_CODES or sender_fault is False
