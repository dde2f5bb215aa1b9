"""The relay: copies the outbox in PostgreSQL to the event log in Redis."""
