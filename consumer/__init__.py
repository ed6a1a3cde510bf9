"""The KCL record processor: decode, validate, route, aggregate, DLQ, checkpoint."""
