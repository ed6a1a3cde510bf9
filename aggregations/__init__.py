"""Event-time windowed aggregates, exactly once, in DynamoDB (durable) and Redis (hot)."""
