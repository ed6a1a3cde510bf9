"""Helpers for tests against moto's in-process AWS: reading back what a stream holds."""

from __future__ import annotations

from typing import Any


def read_stream(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    """Every record of the stream, shard by shard in sequence order: {shard, seq, key, data}."""
    out = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            out += [
                {
                    "shard": shard["ShardId"],
                    "seq": int(r["SequenceNumber"]),
                    "key": r["PartitionKey"],
                    "data": r["Data"],
                }
                for r in page["Records"]
            ]
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return out
