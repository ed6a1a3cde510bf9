"""The delivery kit's exceptions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from delivery.put import Answer


class DeliveryError(Exception):
    """Base of the kit's errors."""


class OversizeEntryError(DeliveryError, ValueError):
    """An entry over a service limit: it can never be sent. Raised before anything of the call went out;
    the caller routes the entry elsewhere (the DLQ) instead."""


class DeliveryUnavailableError(DeliveryError):
    """The service did not acknowledge every entry within the budget: the caller must not go on as if
    they were delivered (the worker backs off and does not checkpoint). The one unavailable-error of SQS,
    Kinesis and Firehose.

    `unacknowledged`: indexes of the entries neither acknowledged nor refused for good; `uncertain`: those
    of them the service may have stored all the same (a timeout, a 5xx, an unanswered entry); `results`:
    what is known of every entry (None: unacknowledged); `code`: the error code of the call that ended it.
    """

    def __init__(
        self,
        message: str,
        *,
        unacknowledged: Sequence[int] = (),
        uncertain: Sequence[int] = (),
        results: Sequence[Answer] = (),
        attempts: int = 0,
        last_error: str = "",
        code: str = "",
    ) -> None:
        super().__init__(message)
        self.unacknowledged = tuple(unacknowledged)
        self.uncertain = tuple(uncertain)
        self.results = tuple(results)
        self.attempts = attempts
        self.last_error = last_error
        self.code = code


class DeliveryRefusedError(DeliveryUnavailableError):
    """The service refused a whole call for a reason another call cannot mend (a missing stream or queue,
    access denied, a bad request): `code` is its error code. Nothing of that call was stored."""


class DeliveryRejectedError(DeliveryUnavailableError):
    """The service refused entries for good (`unacknowledged`, their codes in `last_error`): for callers
    that need every entry delivered (`put.all_acknowledged`), as unavailable as a service that is down."""


class DeliveryOutcomeUnknownError(DeliveryUnavailableError):
    """A call failed so that its entries may or may not be stored (`uncertain`), and the caller asked
    never to send such entries again blindly (the redrive, which settles them through its ledger)."""
