"""Real-shaped inbound mail, byte for byte as providers send it (headers trimmed of routing
noise): a client's threaded reply, out-of-office replies in Gmail, Exchange and Precedence
styles, a Postfix delivery-status notification, a reply with no threading headers, a stranger."""

from __future__ import annotations

import datetime as dt
import email.utils
import uuid

SENDER = "onboarding@northwind.example"


def _date(at: dt.datetime) -> str:
    return email.utils.format_datetime(at)


def _mid(domain: str) -> str:
    return f"<{uuid.uuid4().hex}@{domain}>"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def threaded_reply(*, sender: str, answering: str, earlier: list[str], subject: str,
                   at: dt.datetime, body: str = "Attached, thanks! The questionnaire is done "
                   "and the logins are in the shared vault.", to: str = SENDER,
                   message_id: str | None = None) -> bytes:
    """What Apple Mail / Thunderbird send: In-Reply-To plus the whole References chain,
    a plain-text part with the quoted original under an attribution line."""
    references = " ".join([*earlier, answering])
    return _crlf(f"""Return-Path: <{sender}>
From: Dana Client <{sender}>
To: Northwind Onboarding <{to}>
Subject: Re: {subject}
Date: {_date(at)}
Message-ID: {message_id or _mid(sender.split('@')[1])}
In-Reply-To: {answering}
References: {references}
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

{body}

Best,
Dana

On Wed, Dec 9, 2026 at 11:00 AM Northwind Onboarding <{SENDER}> wrote:
> Reminder: 2 items still needed.
> Your owner: va@northwind.example
""")


def gmail_out_of_office(*, sender: str, answering: str, subject: str, at: dt.datetime) -> bytes:
    """Gmail's vacation responder: Auto-Submitted: auto-replied, the user's own subject."""
    return _crlf(f"""MIME-Version: 1.0
Date: {_date(at)}
References: {answering}
In-Reply-To: {answering}
Message-ID: <CAJ{uuid.uuid4().hex[:20]}@mail.gmail.com>
Subject: Away until Monday
From: Pat Client <{sender}>
To: {SENDER}
Auto-Submitted: auto-replied
Content-Type: multipart/alternative; boundary="000000000000a1b2c3"

--000000000000a1b2c3
Content-Type: text/plain; charset="UTF-8"

I am away until Monday with limited access to e-mail. Re: {subject}

--000000000000a1b2c3
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">I am away until Monday with limited access to e-mail.</div>

--000000000000a1b2c3--
""")


def exchange_out_of_office(*, sender: str, answering: str, subject: str,
                           at: dt.datetime) -> bytes:
    """Exchange/Outlook's automatic reply: no Auto-Submitted, an "Automatic reply:" subject."""
    return _crlf(f"""From: Pat Client <{sender}>
To: Northwind Onboarding <{SENDER}>
Subject: Automatic reply: {subject}
Thread-Topic: {subject}
Thread-Index: AQHbXyZ1c2VyIGF3YXk=
Date: {_date(at)}
Message-ID: <{uuid.uuid4().hex[:24]}@AM0PR01MB1234.eurprd01.prod.exchangelabs.com>
In-Reply-To: {answering}
References: {answering}
X-MS-Has-Attach:
X-MS-Exchange-Inbox-Rules-Loop: {sender}
X-MS-TNEF-Correlator:
X-Auto-Response-Suppress: All
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable
MIME-Version: 1.0

Thank you for your message. I am out of the office with no access to e-mail
and will reply when I return.
""")


def precedence_auto_reply(*, sender: str, answering: str, subject: str,
                          at: dt.datetime) -> bytes:
    """A server-side vacation script: Precedence: auto_reply, X-Autorespond, "Re:" subject."""
    return _crlf(f"""From: {sender}
To: {SENDER}
Subject: Re: {subject}
Date: {_date(at)}
Message-ID: {_mid("autoresponder.example")}
In-Reply-To: {answering}
Precedence: auto_reply
X-Autorespond: Re: {subject}
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Thanks for your e-mail. I am on leave until 14 December.
""")


def postfix_bounce(*, bad_address: str, original_id: str, original_subject: str,
                   at: dt.datetime) -> bytes:
    """Postfix's RFC 3464 report: a notification, the delivery status, the returned headers."""
    domain = bad_address.split("@")[1]
    return _crlf(f"""Return-Path: <>
From: MAILER-DAEMON@mail.northwind.example (Mail Delivery System)
To: {SENDER}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
Date: {_date(at)}
Message-Id: <20261207153012.4F2A81C0123@mail.northwind.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4F2A81C0123.1765121412/mail.northwind.example"

This is a MIME-encapsulated message.

--4F2A81C0123.1765121412/mail.northwind.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.northwind.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<{bad_address}>: host mx.{domain}[203.0.113.5] said: 550 5.1.1
    <{bad_address}>: Recipient address rejected: User unknown in virtual mailbox
    table (in reply to RCPT TO command)

--4F2A81C0123.1765121412/mail.northwind.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.northwind.example
X-Postfix-Queue-ID: 4F2A81C0123
X-Postfix-Sender: rfc822; {SENDER}
Arrival-Date: {_date(at)}

Final-Recipient: rfc822; {bad_address}
Original-Recipient: rfc822;{bad_address}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.{domain}
Diagnostic-Code: smtp; 550 5.1.1 <{bad_address}>: Recipient address rejected:
    User unknown in virtual mailbox table

--4F2A81C0123.1765121412/mail.northwind.example
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <{SENDER}>
Received: by mail.northwind.example (Postfix, from userid 1000)
\tid 4F2A81C0123; {_date(at)}
From: Northwind Onboarding <{SENDER}>
To: {bad_address}
Subject: {original_subject}
Message-ID: {original_id}
MIME-Version: 1.0

--4F2A81C0123.1765121412/mail.northwind.example--
""")


def unthreaded_reply(*, sender: str, at: dt.datetime, to: str = SENDER) -> bytes:
    """A fresh message from a contact (a new mail, not a reply): no threading headers."""
    return _crlf(f"""From: Lee Client <{sender}>
To: {to}
Subject: Our logins
Date: {_date(at)}
Message-ID: {_mid(sender.split('@')[1])}
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<html><body><p>Hi team,</p><p>here are the <b>logins</b> you asked for.</p>
<blockquote>earlier text</blockquote></body></html>
""")


def stranger(*, at: dt.datetime) -> bytes:
    return _crlf(f"""From: Sam Seller <sam@leadgen.example>
To: {SENDER}
Subject: Partnership opportunity
Date: {_date(at)}
Message-ID: {_mid("leadgen.example")}
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Would you like 500 new leads a month?
""")
