"""Tests for tasks.mail (message, outcomes, smtp, transport) against a real loopback aiosmtpd server (no mocks)."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from tasks.mail.message import Attachment, OutgoingMessage, build_mime, message_id_for
from tasks.mail.outcomes import SendOutcome, TransportFault, classify_error
from tasks.mail.smtp import SmtpConfig, SmtpTransport
from tasks.mail.transport import FileTransport, Transport
from tests.smtp_server import LoopbackSmtp, self_signed_tls

PASSWORD = "s3cr3t-Pa55word"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
CSV = "name,amount\nZoë,12.50\nBob,7\n".encode()


def make_msg(key: str = "onboarding:42:welcome", **overrides: object) -> OutgoingMessage:
    """Return a typical message; fields can be overridden."""
    fields: dict[str, object] = {
        "key": key,
        "sender": "Acme Onboarding <hello@acme.example>",
        "to": ("Client <client@example.org>",),
        "subject": "Welcome aboard",
        "html": '<p>Hello <b>there</b></p><img src="cid:logo@acme">',
        "text": "Hello there\n\nPlain text, not HTML.\n",
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)  # type: ignore[arg-type]


def config(server: LoopbackSmtp, **overrides: object) -> SmtpConfig:
    """Return a plain-text loopback SmtpConfig."""
    fields: dict[str, object] = {
        "port": server.port,
        "starttls": False,
        "timeout": 2.0,
        "sender": "bounces@acme.example",
    }
    fields.update(overrides)
    return SmtpConfig(server.host, **fields)  # type: ignore[arg-type]


def parts(part: EmailMessage) -> list[EmailMessage]:
    """Return the direct subparts of a multipart."""
    children = part.get_payload()
    assert isinstance(children, list)
    return [child for child in children if isinstance(child, EmailMessage)]


def tree(part: EmailMessage) -> object:
    """Return the MIME structure as nested (content-type, children) tuples."""
    if part.is_multipart():
        return (part.get_content_type(), [tree(child) for child in parts(part)])
    return part.get_content_type()


@pytest.fixture
def server() -> Iterator[LoopbackSmtp]:
    """A running loopback SMTP server without AUTH."""
    with LoopbackSmtp() as srv:
        yield srv


@pytest.fixture
def auth_server() -> Iterator[LoopbackSmtp]:
    """A running loopback SMTP server requiring AUTH."""
    with LoopbackSmtp(username="apikey", password=PASSWORD) as srv:
        yield srv


# -- MIME --------------------------------------------------------------------------------------


def test_full_multipart_structure_over_smtp(server: LoopbackSmtp) -> None:
    """Text, HTML, inline image and CSV attachment arrive in the expected nesting."""
    msg = make_msg(
        attachments=(
            Attachment("logo.png", PNG, "image/png", inline_cid="logo@acme"),
            Attachment("invoice.csv", CSV, "text/csv"),
        ),
        reply_to="Support <support@acme.example>",
    )
    with SmtpTransport(config(server)) as transport:
        result = transport.send(msg)
    assert result.outcome is SendOutcome.SENT and result.error is None
    (received,) = server.messages
    assert received.mail_from == "bounces@acme.example"
    assert received.rcpt_tos == ("client@example.org",)
    mime = received.message
    assert tree(mime) == (
        "multipart/mixed",
        [
            (
                "multipart/related",
                [("multipart/alternative", ["text/plain", "text/html"]), "image/png"],
            ),
            "text/csv",
        ],
    )
    plain = mime.get_body(("plain",))
    html = mime.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n") == msg.text
    assert "<" not in plain.get_content()
    assert html.get_content().strip() == msg.html
    related, csv = parts(mime)
    assert related.get_param("type") == "multipart/alternative"
    image = parts(related)[1]
    assert image["Content-ID"] == "<logo@acme>"
    assert image.get_content_disposition() == "inline"
    assert image.get_payload(decode=True) == PNG
    assert csv.get_content_disposition() == "attachment"
    assert csv.get_filename() == "invoice.csv"
    assert csv.get_payload(decode=True) == CSV
    assert mime["Message-ID"] == result.message_id
    assert mime["From"] == msg.sender
    assert mime["To"] == "Client <client@example.org>"
    assert mime["Reply-To"] == "Support <support@acme.example>"
    assert mime["Subject"] == "Welcome aboard"
    assert mime["Date"].datetime is not None
    assert mime["MIME-Version"] == "1.0"


def test_only_needed_levels() -> None:
    """Without images or attachments the message is just multipart/alternative."""
    assert tree(build_mime(make_msg())) == ("multipart/alternative", ["text/plain", "text/html"])
    with_csv = make_msg(attachments=(Attachment("a.csv", CSV, "text/csv"),))
    assert tree(build_mime(with_csv)) == (
        "multipart/mixed",
        [("multipart/alternative", ["text/plain", "text/html"]), "text/csv"],
    )


def test_unicode_subject_and_body_are_encoded(server: LoopbackSmtp) -> None:
    """Non-ASCII subject/body/display names are RFC 2047/QP encoded and round-trip."""
    subject = "Willkommen, Zoë — Ihr Start 🎉 " + " ".join(["lang"] * 20)
    msg = make_msg(subject=subject, text="Grüße, Zoë\n", sender="Zoë Ops <ops@acme.example>")
    with SmtpTransport(config(server)) as transport:
        assert transport.send(msg).outcome is SendOutcome.SENT
    (received,) = server.messages
    received.raw.decode("ascii")  # 7-bit clean on the wire
    assert b"=?utf-8?" in received.raw
    assert received.message["Subject"] == subject
    assert received.message["From"] == "Zoë Ops <ops@acme.example>"
    plain = received.message.get_body(("plain",))
    assert plain is not None and plain.get_content().replace("\r\n", "\n") == "Grüße, Zoë\n"


@pytest.mark.parametrize("bad", ["Hi\r\nBcc: victim@example.org", "Hi\nthere", "Hi\rthere"])
def test_crlf_in_subject_refused(bad: str) -> None:
    """CR or LF in the subject raises ValueError naming the subject."""
    with pytest.raises(ValueError, match="subject") as info:
        make_msg(subject=bad)
    assert repr(bad) in str(info.value)


def test_invalid_messages_refused() -> None:
    """Empty recipients, addresses without a domain and bad MIME types are rejected."""
    with pytest.raises(ValueError, match="recipient"):
        make_msg(to=())
    with pytest.raises(ValueError, match="sender"):
        make_msg(sender="nobody")
    with pytest.raises(ValueError, match="mimetype"):
        Attachment("x", b"", "png")
    assert make_msg(to="one@example.org").to == ("one@example.org",)  # type: ignore[arg-type]


def test_message_id_is_deterministic(server: LoopbackSmtp) -> None:
    """Same key gives the same Message-ID; different keys differ even with equal subjects."""
    first = build_mime(make_msg("k-1"))["Message-ID"]
    assert first == build_mime(make_msg("k-1"))["Message-ID"]
    assert re.fullmatch(r"<[0-9a-f]{32}@acme\.example>", first)
    assert first == message_id_for("k-1", "hello@acme.example")
    with SmtpTransport(config(server)) as transport:
        results = [transport.send(make_msg(key)) for key in ("k-1", "k-2", "k-1")]
    ids = [m.message["Message-ID"] for m in server.messages]
    assert ids == [r.message_id for r in results]
    assert ids[0] == ids[2] == first
    assert ids[0] != ids[1]


# -- SMTP transport ----------------------------------------------------------------------------


PIPELINING = pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "stepwise"])


@PIPELINING
def test_batch_of_20_uses_one_connection(server: LoopbackSmtp, pipelining: bool) -> None:
    """Twenty sends share one connection (and the transport satisfies the Protocol). Where the
    server offers PIPELINING no NOOP checks the connection between messages (the first reply of
    the next transaction does); elsewhere one NOOP before each message after the first."""
    server.offer_pipelining = pipelining
    with SmtpTransport(config(server)) as transport:
        assert isinstance(transport, Transport)
        results = [transport.send(make_msg(f"batch-{i}", subject="Same")) for i in range(20)]
    assert [r.outcome for r in results] == [SendOutcome.SENT] * 20
    assert server.count_connections == 1
    assert transport.connections_opened == 1
    assert len({m.message["Message-ID"] for m in server.messages}) == 20
    assert server.noops == (0 if pipelining else 19)


def test_login_and_password_never_leaks(auth_server: LoopbackSmtp) -> None:
    """AUTH with a non-address username works; the password never shows in repr or errors."""
    cfg = config(auth_server, username="apikey", password=PASSWORD)
    assert PASSWORD not in repr(cfg) and PASSWORD not in str(cfg)
    assert "password='***'" in repr(cfg)
    with SmtpTransport(cfg) as transport:
        results = [transport.send(make_msg(f"auth-{i}")) for i in range(3)]
    assert all(r.outcome is SendOutcome.SENT for r in results)
    assert [m.login for m in auth_server.messages] == ["apikey"] * 3  # not "apikey@gmail.com"
    assert auth_server.auth_attempts == 1

    wrong = PASSWORD + "-old"
    auth_server.auth_failure_message = f"535 5.7.8 bad credentials {wrong}"  # echoes secret
    bad = config(auth_server, username="apikey", password=wrong)
    with SmtpTransport(bad) as transport:
        failed = transport.send(make_msg())
        later = transport.send(make_msg("after-535"))
    # A refused login will not heal by retrying: mail is held and the fault names the login.
    assert (failed.outcome, failed.fault) == (SendOutcome.HELD, TransportFault.AUTH)
    assert (later.outcome, later.fault) == (SendOutcome.HELD, TransportFault.AUTH)
    assert auth_server.count_connections == 2  # one login per batch, not one per message
    assert failed.error is not None and "535" in failed.error
    assert wrong not in failed.error and PASSWORD not in failed.error
    assert wrong not in repr(failed)


def test_unauthenticated_client_is_refused(auth_server: LoopbackSmtp) -> None:
    """Without login the server answers 530 to MAIL FROM: no message can pass, so the batch is
    held (the transport's fault, not the message's) and nothing more is tried."""
    with SmtpTransport(config(auth_server)) as transport:
        result = transport.send(make_msg())
        second = transport.send(make_msg("second"))
    assert (result.outcome, result.fault) == (SendOutcome.HELD, TransportFault.REFUSED)
    assert (second.outcome, second.fault) == (SendOutcome.HELD, TransportFault.REFUSED)
    assert result.error is not None and "530" in result.error


def test_username_without_password_is_a_config_error() -> None:
    """A username without password would make yagmail consult the keyring; refuse it."""
    with pytest.raises(ValueError, match="password"):
        SmtpConfig("smtp.example.org", username="u", sender="a@example.org")


@pytest.mark.parametrize(
    ("stage", "code", "expected"),
    [
        ("MAIL", 451, SendOutcome.TRANSIENT),
        ("RCPT", 450, SendOutcome.TRANSIENT),
        ("DATA_CMD", 451, SendOutcome.TRANSIENT),
        ("DATA", 452, SendOutcome.TRANSIENT),
        ("RCPT", 550, SendOutcome.PERMANENT),
        ("DATA_CMD", 554, SendOutcome.PERMANENT),
        ("DATA", 554, SendOutcome.PERMANENT),
    ],
)
@PIPELINING
def test_reply_codes_are_classified(
    server: LoopbackSmtp, stage: str, code: int, expected: SendOutcome, pipelining: bool
) -> None:
    """4xx -> TRANSIENT, 5xx -> PERMANENT, each refused transaction RSET before the next, so
    later messages still go out on the same connection (a server that keeps a transaction open
    after refusing DATA answers the next MAIL with 503 unless the client resets)."""
    server.offer_pipelining = pipelining
    server.fail_next(code, stage=stage, count=2)  # type: ignore[arg-type]
    with SmtpTransport(config(server)) as transport:
        results = [transport.send(make_msg(f"code-{i}")) for i in range(3)]
    assert [r.outcome for r in results] == [expected, expected, SendOutcome.SENT]
    assert all(r.fault is None for r in results)
    assert str(code) in (results[0].error or "")
    assert server.rsets == 2
    assert server.count_connections == 1
    assert [m.message["Message-ID"] for m in server.messages] == [results[2].message_id]


@PIPELINING
def test_sender_refused_holds_the_batch(server: LoopbackSmtp, pipelining: bool) -> None:
    """A 5xx to MAIL FROM refuses the envelope sender every message shares: the batch is held
    with a transport fault and no further transaction is tried."""
    server.offer_pipelining = pipelining
    server.fail_next(553, stage="MAIL", count=1, text="sender not allowed")
    with SmtpTransport(config(server)) as transport:
        results = [transport.send(make_msg(f"sender-{i}")) for i in range(3)]
    assert {(r.outcome, r.fault) for r in results} == {(SendOutcome.HELD,
                                                         TransportFault.REFUSED)}
    assert "553 sender not allowed" in (results[2].error or "")
    assert server.messages == []


def test_no_reply_after_the_final_dot_is_uncertain(server: LoopbackSmtp) -> None:
    """The server takes the whole message and the connection dies before its 250: delivery is
    unknown, so the result is UNCERTAIN (never TRANSIENT, which would send it again); the next
    message goes out on a new connection."""
    server.drop_after_dot = 1
    with SmtpTransport(config(server)) as transport:
        lost = transport.send(make_msg("dot-1"))
        after = transport.send(make_msg("dot-2"))
    assert lost.outcome is SendOutcome.UNCERTAIN
    assert "no reply after the message was handed over" in (lost.error or "")
    assert after.outcome is SendOutcome.SENT
    assert [m.message["Message-ID"] for m in server.messages] == [lost.message_id,
                                                                  after.message_id]
    assert server.count_connections == 2


# -- one batch, pipelined across messages (RFC 2920) --------------------------------------------


def batch(n: int) -> list[OutgoingMessage]:
    """n messages, the i-th to ci@example.org, so the server can treat each one its own way."""
    return [make_msg(f"batch-{i}", to=(f"c{i}@example.org",)) for i in range(n)]


@PIPELINING
def test_a_batch_with_refusals_in_the_middle(server: LoopbackSmtp, pipelining: bool) -> None:
    """c1 refused at RCPT, c2 refused after its final dot, c3 not sendable to this server (a
    non-ASCII local part, no SMTPUTF8): each says why, and the others go out once each on one
    connection. Pipelined, a dot carries the next message's envelope (one round-trip a
    message): the refused RCPT is RSET, the refused dot is not (the dot ended its transaction,
    and the next envelope is already behind it). Stepwise, as `send` always did."""
    server.offer_pipelining = pipelining
    server.offer_smtputf8 = False
    server.refuse_recipients = {"c1@example.org": 550}
    server.refuse_content = {"c2@example.org": 554}
    messages = batch(6)
    messages[3] = make_msg("batch-3", to=("josé@example.org",))
    with SmtpTransport(config(server)) as transport:
        results = {r.key: r for r in transport.send_all(messages)}
    assert [results[m.key].outcome for m in messages] == [
        SendOutcome.SENT, SendOutcome.PERMANENT, SendOutcome.PERMANENT, SendOutcome.PERMANENT,
        SendOutcome.SENT, SendOutcome.SENT]
    assert "RCPT TO refused: 550" in (results["batch-1"].error or "")
    assert "message refused: 554" in (results["batch-2"].error or "")
    assert "SMTPUTF8" in (results["batch-3"].error or "")
    assert [(m.rcpt_tos, m.message["Message-ID"]) for m in server.messages] == [
        ((f"c{i}@example.org",), results[f"batch-{i}"].message_id) for i in (0, 4, 5)]
    assert server.count_connections == 1
    if pipelining:
        # c0's dot carried c1's envelope, c2's c4's (c3 never went out), c4's c5's.
        assert (server.commands_after_dot, server.rsets, server.noops) == (3, 1, 0)
    else:
        assert (server.commands_after_dot, server.rsets, server.noops) == (0, 2, 5)


@PIPELINING
def test_a_connection_lost_after_a_dot_mid_batch(server: LoopbackSmtp, pipelining: bool) -> None:
    """The server takes c1 and the connection dies before its 250: c1 is UNCERTAIN (never
    re-sent). Pipelined, c2's envelope went out behind c1's dot and was lost with the
    connection: nothing of c2 was handed over, so it is TRANSIENT (sent by a later pass);
    stepwise, c2 had not started and goes out. The rest go out on a reopened connection."""
    server.offer_pipelining = pipelining
    server.drop_after_dot_to = {"c1@example.org"}
    with SmtpTransport(config(server)) as transport:
        results = list(transport.send_all(batch(5)))
    second = SendOutcome.TRANSIENT if pipelining else SendOutcome.SENT
    assert [(r.key, r.outcome) for r in results] == [
        ("batch-0", SendOutcome.SENT), ("batch-1", SendOutcome.UNCERTAIN), ("batch-2", second),
        ("batch-3", SendOutcome.SENT), ("batch-4", SendOutcome.SENT)]
    assert "no reply after the message was handed over" in (results[1].error or "")
    received = [m.rcpt_tos[0] for m in server.messages]
    assert received == [f"c{i}@example.org" for i in ((0, 1, 3, 4) if pipelining
                                                      else (0, 1, 2, 3, 4))]
    assert server.count_connections == 2
    # c0->c1, c1->c2 (lost), c3->c4; stepwise, never.
    assert server.commands_after_dot == (3 if pipelining else 0)


@PIPELINING
def test_each_result_is_handed_back_before_the_next_message_goes_out(
    server: LoopbackSmtp, pipelining: bool
) -> None:
    """When the server reads a message's content, the caller already holds the result of every
    message before it (so it can record each one first): the transport hands over message N+1
    only when asked for the result after N's."""
    server.offer_pipelining = pipelining
    taken: list[SendOutcome] = []
    seen_at_dot: list[tuple[str, int]] = []
    server.on_content = lambda envelope: seen_at_dot.append((envelope.rcpt_tos[0], len(taken)))
    with SmtpTransport(config(server)) as transport:
        for result in transport.send_all(batch(5)):
            taken.append(result.outcome)
    assert taken == [SendOutcome.SENT] * 5
    assert seen_at_dot == [(f"c{i}@example.org", i) for i in range(5)]
    assert server.commands_after_dot == (4 if pipelining else 0)


def test_a_batch_abandoned_midway_hands_over_nothing_more(server: LoopbackSmtp) -> None:
    """A caller that stops asking (say, recording a result failed) leaves the next envelope on
    the wire with its replies unread: that connection is dropped, not reused in an unknown
    state, so the next message goes out whole on a new one and nothing else arrives."""
    with SmtpTransport(config(server)) as transport:
        results = transport.send_all(batch(3))
        first = next(results)
        results.close()
        later = transport.send(make_msg("later", to=("later@example.org",)))
    assert first.outcome is later.outcome is SendOutcome.SENT
    assert [m.rcpt_tos for m in server.messages] == [("c0@example.org",),
                                                     ("later@example.org",)]
    assert [m.message["Message-ID"] for m in server.messages] == [first.message_id,
                                                                  later.message_id]
    assert server.count_connections == 2


def test_greeting_refusal_holds_the_batch(server: LoopbackSmtp) -> None:
    """554 at the greeting is the server refusing us: HELD with a transport fault, one try."""
    server.greeting_reply = "554 5.7.1 no service for you"
    with SmtpTransport(config(server)) as transport:
        results = [transport.send(make_msg(f"greet-{i}")) for i in range(3)]
    assert {(r.outcome, r.fault) for r in results} == {(SendOutcome.HELD,
                                                         TransportFault.REFUSED)}
    assert "554" in (results[0].error or "")
    assert server.count_connections == 1


def test_idn_domain_is_idna_encoded_and_a_utf8_local_part_needs_smtputf8(
    server: LoopbackSmtp,
) -> None:
    """pat@bücher.example goes out as pat@xn--bcher-kva.example on any server (envelope and
    To header); a non-ASCII local part goes out only where the server offers SMTPUTF8."""
    server.offer_smtputf8 = False
    with SmtpTransport(config(server)) as transport:
        idn = transport.send(make_msg("idn-1", to=("Zoë Pat <pat@bücher.example>",)))
        local = transport.send(make_msg("idn-2", to=("josé@example.org",)))
    assert idn.outcome is SendOutcome.SENT
    assert local.outcome is SendOutcome.PERMANENT
    assert "SMTPUTF8" in (local.error or "")
    (received,) = server.messages
    assert received.rcpt_tos == ("pat@xn--bcher-kva.example",)
    assert received.message["To"].addresses[0].addr_spec == "pat@xn--bcher-kva.example"
    assert received.message["To"].addresses[0].display_name == "Zoë Pat"
    server.offer_smtputf8 = True
    with SmtpTransport(config(server)) as transport:
        assert transport.send(make_msg("idn-3", to=("josé@example.org",))).outcome \
            is SendOutcome.SENT
    assert server.messages[-1].rcpt_tos == ("josé@example.org",)


@PIPELINING
def test_mixed_recipient_refusals(server: LoopbackSmtp, pipelining: bool) -> None:
    """Partial refusal is SENT (a retry would duplicate); all refused incl. a 4xx is TRANSIENT;
    the connection stays usable after either."""
    server.offer_pipelining = pipelining
    server.refuse_recipients = {"gone@example.org": 550, "full@example.org": 452}
    with SmtpTransport(config(server)) as transport:
        partial = transport.send(make_msg("p", to=("ok@example.org", "gone@example.org")))
        mixed = transport.send(make_msg("m", to=("gone@example.org", "full@example.org")))
        after = transport.send(make_msg("a", to=("ok@example.org",)))
    assert partial.outcome is SendOutcome.SENT
    assert partial.error is not None and "gone@example.org" in partial.error
    assert server.messages[0].rcpt_tos == ("ok@example.org",)
    assert mixed.outcome is SendOutcome.TRANSIENT
    assert after.outcome is SendOutcome.SENT
    assert [m.rcpt_tos for m in server.messages] == [("ok@example.org",)] * 2
    assert server.count_connections == 1


def test_server_stopped_is_transient(server: LoopbackSmtp) -> None:
    """Connection refused on __enter__: no exception, every send reports TRANSIENT."""
    server.stop()
    with SmtpTransport(config(server)) as transport:
        results = [transport.send(make_msg(f"down-{i}")) for i in range(5)]
    assert {r.outcome for r in results} == {SendOutcome.TRANSIENT}
    assert "refused" in (results[0].error or "").lower()
    server.start()
    with SmtpTransport(config(server)) as transport:
        assert transport.send(make_msg()).outcome is SendOutcome.SENT


def test_slow_greeting_times_out_as_transient(server: LoopbackSmtp) -> None:
    """A greeting slower than ``connect_timeout`` gives TRANSIENT (an unreachable transport)
    once per batch, not once per message, and the longer reply timeout does not apply."""
    server.greeting_delay = 5.0
    with SmtpTransport(config(server, timeout=30.0, connect_timeout=1.0)) as transport:
        results = [transport.send(make_msg(f"slow-{i}")) for i in range(5)]
    # Had the 30 s reply timeout applied, the 5 s greeting would have arrived and all been SENT.
    assert {(r.outcome, r.fault) for r in results} == {(SendOutcome.TRANSIENT,
                                                         TransportFault.UNREACHABLE)}
    assert "timed out" in (results[0].error or "")
    assert server.count_connections == 1


def test_slow_data_reply_is_uncertain(server: LoopbackSmtp) -> None:
    """No reply after the final dot within the timeout: the server has the message and may
    deliver it, so the result is UNCERTAIN (never re-sent), not an exception."""
    server.data_delay = 3.0
    with SmtpTransport(config(server, timeout=0.5)) as transport:
        result = transport.send(make_msg())
    # Had the client waited out the server's 3 s, it would have read the 250 and said SENT.
    assert result.outcome is SendOutcome.UNCERTAIN


@PIPELINING
def test_dropped_connection_is_reopened_once(server: LoopbackSmtp, pipelining: bool) -> None:
    """A server-side drop mid-batch is healed once transparently; a second drop is not."""
    server.offer_pipelining = pipelining
    with SmtpTransport(config(server)) as transport:
        first = transport.send(make_msg("drop-1"))
        server.drop_connections()
        second = transport.send(make_msg("drop-2"))
        third = transport.send(make_msg("drop-3"))
        server.drop_connections()
        fourth = transport.send(make_msg("drop-4"))
    assert [r.outcome for r in (first, second, third)] == [SendOutcome.SENT] * 3
    assert fourth.outcome is SendOutcome.TRANSIENT
    assert server.count_connections == 2
    assert len(server.messages) == 3


def test_starttls_verifies_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STARTTLS uses a verifying context: untrusted cert fails, trusted cert works."""
    server_ctx, cert = self_signed_tls(tmp_path)
    with LoopbackSmtp(starttls_context=server_ctx) as srv:
        with SmtpTransport(config(srv, starttls=True)) as transport:
            untrusted = transport.send(make_msg("tls-1"))
        with SmtpTransport(config(srv, starttls=True, verify_tls=False)) as transport:
            unverified = transport.send(make_msg("tls-2"))
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read by ssl.create_default_context()
        with SmtpTransport(config(srv, starttls=True)) as transport:
            trusted = transport.send(make_msg("tls-3"))
    assert (untrusted.outcome, untrusted.fault) == (SendOutcome.HELD, TransportFault.TLS)
    assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.error or "")
    assert unverified.outcome is SendOutcome.SENT
    assert trusted.outcome is SendOutcome.SENT


def test_tls_hostname_is_checked_and_implicit_ssl_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Implicit TLS works with a trusted cert and fails when the name does not match."""
    good_ctx, good_cert = self_signed_tls(tmp_path / "good")
    bad_ctx, bad_cert = self_signed_tls(tmp_path / "bad", names=("other.example",))
    monkeypatch.setenv("SSL_CERT_FILE", str(good_cert))
    with LoopbackSmtp(implicit_tls_context=good_ctx) as srv:
        with SmtpTransport(config(srv, ssl=True)) as transport:
            assert transport.send(make_msg()).outcome is SendOutcome.SENT
    monkeypatch.setenv("SSL_CERT_FILE", str(bad_cert))
    with LoopbackSmtp(implicit_tls_context=bad_ctx) as srv:
        with SmtpTransport(config(srv, ssl=True)) as transport:
            mismatch = transport.send(make_msg())
    assert (mismatch.outcome, mismatch.fault) == (SendOutcome.HELD, TransportFault.TLS)
    assert "mismatch" in (mismatch.error or "").lower()


def test_classify_error_table() -> None:
    """Direct checks of the classification rules."""
    refused_5xx = smtplib.SMTPRecipientsRefused({"a@x": (550, b"no"), "b@x": (553, b"no")})
    refused_mixed = smtplib.SMTPRecipientsRefused({"a@x": (550, b"no"), "b@x": (451, b"later")})
    assert classify_error(refused_5xx) is SendOutcome.PERMANENT
    assert classify_error(refused_mixed) is SendOutcome.TRANSIENT
    assert classify_error(smtplib.SMTPDataError(554, b"spam")) is SendOutcome.PERMANENT
    assert classify_error(smtplib.SMTPSenderRefused(451, b"x", "a@x")) is SendOutcome.TRANSIENT
    assert classify_error(smtplib.SMTPServerDisconnected("gone")) is SendOutcome.TRANSIENT
    assert classify_error(ConnectionRefusedError()) is SendOutcome.TRANSIENT
    assert classify_error(TimeoutError()) is SendOutcome.TRANSIENT


# -- File transport ----------------------------------------------------------------------------


def test_file_transport_writes_parseable_eml(tmp_path: Path) -> None:
    """Each message lands atomically in {dir}/{safe key}.eml and parses back."""
    outbox = tmp_path / "outbox"
    msg = make_msg(
        "client/42:welcome",
        subject="Hallo Zoë",
        attachments=(
            Attachment("logo.png", PNG, "image/png", inline_cid="logo@acme"),
            Attachment("invoice.csv", CSV, "text/csv"),
        ),
    )
    with FileTransport(outbox) as transport:
        assert isinstance(transport, Transport)
        result = transport.send(msg)
        again = transport.send(msg)
        plain = transport.send(make_msg("simple-key"))
    assert result.outcome is again.outcome is plain.outcome is SendOutcome.SENT
    files = sorted(p.name for p in outbox.iterdir())
    assert len(files) == 2 and "simple-key.eml" in files
    assert all(name.endswith(".eml") and "/" not in name for name in files)
    safe = transport.path_for(msg.key)
    assert safe.parent == outbox and safe.name.startswith("client_42_welcome")
    parsed = BytesParser(policy=policy.default).parsebytes(safe.read_bytes())
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "Hallo Zoë"
    assert parsed["Message-ID"] == result.message_id
    body = parsed.get_body(("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == msg.text
    assert [p.get_filename() for p in parsed.iter_attachments()] == ["invoice.csv"]
