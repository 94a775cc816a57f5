"""Mail: what goes out (outbox, transport, rendering) and what comes back (inbox)."""
