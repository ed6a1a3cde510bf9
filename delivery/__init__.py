"""One delivery kit for every batch put to AWS: Kinesis PutRecords, SQS SendMessageBatch (and the other
SQS batch actions), Firehose PutRecordBatch.

- `limits`: the services' limits, defined once.
- `batching`: the splitters (order kept per key, or plain count/bytes).
- `backoff`: exponential backoff with full jitter.
- `retryable`: which failures are worth another call, and whether the service may have stored them.
- `put`: send until every entry is acknowledged or refused for good, within a budget.
- `aws`: the thin adapters over boto3 clients (the only module that knows botocore).
- `errors`: the kit's exceptions.

Everything but `aws` is pure: no boto3 or botocore, no clock or sleep of its own (they are injected).
"""
