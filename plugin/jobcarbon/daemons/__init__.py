"""The long-running services: the loops that read a source and write the ledger."""
