"""streamkpi: a streaming analytics worker for Amazon Kinesis."""

__version__ = "0.1.0"
