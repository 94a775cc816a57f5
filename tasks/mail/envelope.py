"""One SMTP transaction's envelope: MAIL, each RCPT and DATA, and what their replies decide.

Where the server offers PIPELINING (RFC 2920; most providers do) the three go out in one write
(`commands`) and their replies are read in order (`replies`): on their own (`pipelined`), or
behind the previous message's final dot, which the transport writes with them; elsewhere one
round-trip each (`step_by_step`). Either way the replies come back as a list the transport reads
with `refusal` and `refused_recipients`, so the exchanges cannot decide differently.
"""

from __future__ import annotations

import smtplib

from tasks.mail.outcomes import decode_reply

Reply = tuple[int, bytes]


def step_by_step(smtp: smtplib.SMTP, sender: str, options: list[str],
                 recipients: list[str]) -> list[Reply]:
    """The replies to MAIL, each RCPT and DATA, one round-trip each, stopping at the first
    reply that ends the transaction (the list is then shorter)."""
    replies = [smtp.mail(sender, options)]
    if replies[0][0] != 250:
        return replies
    for rcpt in recipients:
        replies.append(smtp.rcpt(rcpt))
        if replies[-1][0] == 421:
            return replies
    if all(code not in (250, 251) for code, _ in replies[1:]):
        return replies
    replies.append(smtp.docmd("DATA"))
    return replies


def commands(sender: str, options: list[str], recipients: list[str], utf8: bool) -> bytes:
    """MAIL, every RCPT and DATA as one pipelined write; raises ValueError for a line break
    in an address."""
    suffix = "".join(f" {option}" for option in options)
    lines = [f"MAIL FROM:{smtplib.quoteaddr(sender)}{suffix}",
             *(f"RCPT TO:{smtplib.quoteaddr(rcpt)}" for rcpt in recipients), "DATA"]
    if any("\r" in line or "\n" in line for line in lines):
        raise ValueError("a line break in an envelope address")
    return "".join(f"{line}\r\n" for line in lines).encode("utf-8" if utf8 else "ascii")


def pipelined(smtp: smtplib.SMTP, envelope: bytes, recipients: list[str],
              reused: bool) -> list[Reply] | None:
    """MAIL, every RCPT and DATA (`envelope`, from `commands`) in one round-trip, then their
    replies (`replies`). None: a `reused` connection was closed before the first reply (nothing
    of the message was handed over; a NOOP before each message would have found it, a
    round-trip dearer)."""
    try:
        smtp.send(envelope)
    except (smtplib.SMTPServerDisconnected, OSError):
        if reused:
            return None
        raise
    return replies(smtp, recipients, reused)


def replies(smtp: smtplib.SMTP, recipients: list[str], reused: bool) -> list[Reply] | None:
    """The replies to an envelope already written (`commands`: by `pipelined`, or after the
    previous message's final dot), in order, stopping at a 421; a transaction that failed
    although DATA was accepted is ended with an empty message. None: as for `pipelined`."""
    try:
        got = [smtp.getreply()]
    except (smtplib.SMTPServerDisconnected, OSError):
        if reused:
            return None
        raise
    expected = len(recipients) + 2
    while len(got) < expected and got[-1][0] != 421:
        got.append(smtp.getreply())
    if len(got) == expected and got[-1][0] == 354 and (
            got[0][0] != 250 or not refused_recipients(recipients, got)[1]):
        # DATA accepted although the transaction failed: end it with an empty message.
        smtp.send(b".\r\n")
        smtp.getreply()
    return got


def refused_recipients(recipients: list[str],
                       replies: list[Reply]) -> tuple[dict[str, Reply], bool]:
    """(the recipients refused, whether any was accepted), from the RCPT replies."""
    refused = {rcpt: reply for rcpt, reply in zip(recipients, replies[1:], strict=False)
               if reply[0] not in (250, 251)}
    return refused, len(refused) < len(recipients)


def details(refused: dict[str, Reply]) -> str:
    return "; ".join(f"{r}: {c} {decode_reply(t)}" for r, (c, t) in refused.items())


def refusal(recipients: list[str], replies: list[Reply]) -> tuple[str, int, bytes | str] | None:
    """(step, code, reply) of a transaction that ended before the message, or None to send it."""
    code, reply = replies[0]
    if code != 250:
        return "MAIL FROM", code, reply
    for rcpt, (code, reply) in zip(recipients, replies[1:], strict=False):
        if code == 421:
            return f"RCPT TO {rcpt}", code, reply
    refused, any_accepted = refused_recipients(recipients, replies)
    if not any_accepted:
        codes = [c for c, _ in refused.values()]
        worst = min(codes) if any(c < 500 for c in codes) else codes[0]
        return "RCPT TO", worst, (details(refused).split(": ", 1)[1] if len(refused) == 1
                                  else details(refused))
    code, reply = replies[-1]
    if code != 354:
        return "DATA", code, reply
    return None
