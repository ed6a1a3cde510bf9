"""Operating the dead-letter queue: stats, peek and redrive (exactly once, through the ledger)."""
