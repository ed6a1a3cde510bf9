"""Replay: put events from the S3 archive (as Firehose writes it) back into a Kinesis stream.

Pure modules: `layout` (which prefixes can hold a time range), `split` (object bytes -> events, streamed),
`partition` (partition keys), `pace` (token bucket, event-time speedup), `progress` (the resume file).
I/O: `runner` (S3, and Kinesis through the delivery kit, which keeps the order per key), `rebuild`
(reset + replay). Exceptions: `errors`.
"""
