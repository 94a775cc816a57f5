"""The onboarding mailbox, read: client replies, auto-replies and bounces recorded by themselves.

fetch (IMAP over verified TLS, nothing marked read) → classify (bounce, auto-reply, reply) →
match (thread, signed reply-to, contact) → record (once per Message-ID) → sweep (one pass).
"""
