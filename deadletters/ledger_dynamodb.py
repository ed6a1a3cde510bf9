"""The redrive ledger in DynamoDB: items of the metrics table, in a key space of their own.

    letter entry   pk = "redrive#<stream>#<letter id>"               sk = "letter"
    record claim   pk = "redrive#<stream>#<shard id>#<sequence number>"   sk = "claim"
    expires_at (N) TTL, epoch seconds, 15 days after the entry was written (the table's TTL attribute)

The aggregates' items have pk = "<resolution>#<bucket start ms>" with a resolution named by a duration
("1m", "1h"), and every reader of the table (`DynamoDBStore.read`, `load`, `delete`, hence query, reset,
rebuild) asks for such keys only, so it never meets these items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deadletters.errors import DlqAdminError
from deadletters.ledger import DONE, PENDING, LedgerEntry

LETTER_SK = "letter"
CLAIM_SK = "claim"
BATCH_GET_KEYS = 100
_ATTRIBUTES = {"#state": "state", "#run": "run_id", "#ms": "pending_ms"}


def letter_pk(stream: str, letter_id: str) -> str:
    return f"redrive#{stream}#{letter_id}"


def claim_pk(stream: str, shard_id: str, sequence_number: str) -> str:
    return f"redrive#{stream}#{shard_id}#{sequence_number}"


def _item(entry: LedgerEntry) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": {"S": letter_pk(entry.stream, entry.letter_id)},
        "sk": {"S": LETTER_SK},
        "stream": {"S": entry.stream},
        "letter_id": {"S": entry.letter_id},
        "state": {"S": entry.state},
        "run_id": {"S": entry.run_id},
        "pending_ms": {"N": str(entry.pending_ms)},
        "partition_key": {"S": entry.partition_key},
        "payload_sha256": {"S": entry.payload_sha256},
        "expires_at": {"N": str(entry.expires_at)},
    }
    if entry.sequence_number:
        item |= {"shard_id": {"S": entry.shard_id}, "sequence_number": {"S": entry.sequence_number}}
    return item


def _entry(item: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        stream=item["stream"]["S"],
        letter_id=item["letter_id"]["S"],
        state=item["state"]["S"],
        run_id=item["run_id"]["S"],
        pending_ms=int(item["pending_ms"]["N"]),
        partition_key=item["partition_key"]["S"],
        payload_sha256=item["payload_sha256"]["S"],
        shard_id=item.get("shard_id", {}).get("S", ""),
        sequence_number=item.get("sequence_number", {}).get("S", ""),
        expires_at=int(item["expires_at"]["N"]),
    )


def _refused(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DynamoDbRedriveLedger:
    """`RedriveLedger` over a boto3 DynamoDB client (errors other than a failed condition propagate)."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self.dynamodb, self.table = dynamodb, table

    def check(self) -> None:
        """Raise a DlqAdminError that says what to do when the table is not there."""
        try:
            self.dynamodb.describe_table(TableName=self.table)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise DlqAdminError(
                    f"the redrive ledger is kept in the metrics table {self.table!r}, which does not exist; is the "
                    "stack up? `streamkpi local up` creates it (or set STREAMKPI_METRICS_TABLE)."
                ) from None
            raise DlqAdminError(
                f"cannot describe the table {self.table!r}: {exc}; check the AWS credentials."
            ) from None
        except BotoCoreError as exc:
            raise DlqAdminError(f"cannot reach DynamoDB ({exc}); is the stack up? `streamkpi local status`.") from None

    def get(self, stream: str, letter_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        out: dict[str, LedgerEntry] = {}
        ids = list(dict.fromkeys(letter_ids))
        for start in range(0, len(ids), BATCH_GET_KEYS):
            keys = [
                {"pk": {"S": letter_pk(stream, i)}, "sk": {"S": LETTER_SK}} for i in ids[start : start + BATCH_GET_KEYS]
            ]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                reply = self.dynamodb.batch_get_item(RequestItems=request)
                for item in reply.get("Responses", {}).get(self.table, []):
                    entry = _entry(item)
                    out[entry.letter_id] = entry
                request = reply.get("UnprocessedKeys") or {}
        return out

    def begin(self, entry: LedgerEntry) -> bool:
        return self._put(_item(entry), "attribute_not_exists(pk)", {})

    def take_over(self, stale: LedgerEntry, entry: LedgerEntry) -> bool:
        values = {":pending": {"S": PENDING}, ":run": {"S": stale.run_id}, ":ms": {"N": str(stale.pending_ms)}}
        condition = "#state = :pending AND #run = :run AND #ms = :ms"
        return self._put(_item(entry), condition, values, _ATTRIBUTES)

    def claim(self, entry: LedgerEntry, shard_id: str, sequence_number: str) -> bool:
        item = {
            "pk": {"S": claim_pk(entry.stream, shard_id, sequence_number)},
            "sk": {"S": CLAIM_SK},
            "letter_id": {"S": entry.letter_id},
            "expires_at": {"N": str(entry.expires_at)},
        }
        return self._put(item, "attribute_not_exists(pk) OR letter_id = :id", {":id": {"S": entry.letter_id}})

    def finish(self, entry: LedgerEntry, shard_id: str, sequence_number: str) -> None:
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key={"pk": {"S": letter_pk(entry.stream, entry.letter_id)}, "sk": {"S": LETTER_SK}},
                UpdateExpression="SET #state = :done, shard_id = :shard, sequence_number = :seq",
                ConditionExpression="attribute_exists(pk)",  # never create a partial entry
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":done": {"S": DONE},
                    ":shard": {"S": shard_id},
                    ":seq": {"S": sequence_number},
                },
            )
        except ClientError as exc:
            if not _refused(exc):
                raise

    def abort(self, entry: LedgerEntry) -> None:
        try:
            self.dynamodb.delete_item(
                TableName=self.table,
                Key={"pk": {"S": letter_pk(entry.stream, entry.letter_id)}, "sk": {"S": LETTER_SK}},
                ConditionExpression="#state = :pending AND #run = :run",
                ExpressionAttributeNames={"#state": "state", "#run": "run_id"},
                ExpressionAttributeValues={":pending": {"S": PENDING}, ":run": {"S": entry.run_id}},
            )
        except ClientError as exc:
            if not _refused(exc):
                raise

    def _put(
        self, item: dict[str, Any], condition: str, values: dict[str, Any], names: dict[str, str] | None = None
    ) -> bool:
        kwargs: dict[str, Any] = {"TableName": self.table, "Item": item, "ConditionExpression": condition}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        if names:
            kwargs["ExpressionAttributeNames"] = names
        try:
            self.dynamodb.put_item(**kwargs)
        except ClientError as exc:
            if _refused(exc):
                return False
            raise
        return True
