"""What the forward sinks share: put their entries through the delivery kit, log each retry, and say in
events (a packed Firehose record holds many) what is pending when the service does not acknowledge."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from delivery.backoff import Backoff
from delivery.errors import DeliveryRefusedError, DeliveryRejectedError, DeliveryUnavailableError
from delivery.put import BatchService, Budget, Entry, RetryNotice, all_acknowledged, put_until_acknowledged

log = logging.getLogger("streamkpi.sinks")


class DeliverySink:
    """A forward sink that puts to one `service` of the kit, each batch at most `attempts` times."""

    def __init__(
        self, name: str, service: BatchService, sleep: Callable[[float], None], attempts: int, backoff: Backoff
    ) -> None:
        self.name = name
        self.service = service
        self.sleep, self.budget, self.backoff = sleep, Budget(attempts), backoff

    def _put(self, entries: Sequence[Entry], events_per_entry: Sequence[int] | None = None) -> None:
        """Put every entry, or raise DeliveryUnavailableError with the sink's name and its events pending."""
        total = sum(events_per_entry) if events_per_entry is not None else len(entries)

        def events(indexes: Sequence[int]) -> int:
            return sum(events_per_entry[i] for i in indexes) if events_per_entry is not None else len(indexes)

        def on_retry(notice: RetryNotice) -> None:
            log.warning(
                "sink: retrying unacknowledged records",
                extra={
                    "sink": self.name,
                    "service": self.service.service,
                    "target": self.service.target,
                    "failed": len(notice.report.failed),  # records (a packed Firehose record holds many events)
                    "of": len(notice.report.sent),
                    "pending": events(notice.unacknowledged),  # events
                    "error": notice.report.error,
                    "attempt": notice.report.attempt,
                    "delay_s": round(notice.delay_s, 3),
                },
            )

        where = f"sink {self.name!r}: {self.service.service} {self.service.target!r}"
        try:
            results = put_until_acknowledged(
                entries, self.service, budget=self.budget, backoff=self.backoff, sleep=self.sleep, on_retry=on_retry
            )
            all_acknowledged(results, self.service)
        except DeliveryRefusedError as exc:
            raise DeliveryUnavailableError(
                f"{where} refused the call ({exc.code or exc.last_error}); "
                f"{events(exc.unacknowledged)} of {total} events pending"
            ) from exc
        except DeliveryRejectedError as exc:
            raise DeliveryUnavailableError(
                f"{where} refused {events(exc.unacknowledged)} of {total} events for good ({exc.last_error})"
            ) from exc
        except DeliveryUnavailableError as exc:
            raise DeliveryUnavailableError(
                f"{where} did not acknowledge {events(exc.unacknowledged)} of {total} events after {exc.attempts} "
                f"attempts (last error: {exc.last_error})"
            ) from exc

    def _refuse(self, exc: ValueError) -> ValueError:
        """An event this sink can never take, said so the caller knows where it belongs."""
        return type(exc)(f"sink {self.name!r}: {exc} (route the event to the DLQ)")
