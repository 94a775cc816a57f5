"""Mail throughput: the outbox's batch delivery (one SMTP connection per batch, pipelined across
messages where the server offers PIPELINING: one round-trip a message) against one connection +
login per message through the same outbox, and against bare yagmail, to the loopback SMTP server
with AUTH, plain and STARTTLS; and the same with STARTTLS across a network (`--mail-rtt`, 30 ms
round-trip by default: tests/bench/network.py), where what a connection, a login and each
round-trip cost shows."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tests.bench.common import OUT, Part, fresh_copy, log, median
from tests.bench.stack import new_clients

MAIL_MESSAGES = 200
NETWORK_MESSAGES = 30  # at ~11 round-trips a message, bare yagmail sends ~3 a second
NETWORK_RTT_MS = 30.0


def _template(home: Path, messages: int) -> tuple[Path, dt.datetime]:
    """A database with `messages` welcome mails queued for as many new clients, and when."""
    from db.playbook import get_playbook
    from db.session import dispose_all, session_factory, upgrade
    from db.settings import get_settings
    from tasks.comms.sweeps import queue_due

    template = home / f"template-{messages}.db"
    upgrade(f"sqlite:///{template}")
    os.environ["HANDOFF_DATABASE_URL"] = f"sqlite:///{template}"
    get_settings.cache_clear()
    new_clients(messages, "Mail")
    now = dt.datetime.now(dt.UTC)
    with session_factory(f"sqlite:///{template}")() as session, session.begin():
        queue_due(session, get_playbook(), now, escalations=False)
    dispose_all()
    return template, now


def bench_mail(quick: bool, rtt_ms: float = NETWORK_RTT_MS) -> dict[str, Any]:
    """Outbox (one connection per batch) vs one connection + login per message (yagmail)."""
    from db.settings import get_settings
    from tests.flow.conftest import always_open_playbook

    messages = 60 if quick else MAIL_MESSAGES
    home = OUT / "mail"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ.update({"HANDOFF_HOME": str(home), "HANDOFF_PLAYBOOK_PATH": str(
        always_open_playbook(home / "playbook.yaml"))})
    template, now = _template(home, messages)
    result: dict[str, Any] = {"messages": messages, "runs": 2 if quick else 3}
    for mode in ("plain", "starttls"):
        result[mode] = _mail_mode(mode, template, now, result["runs"])
    if rtt_ms > 0:
        over, then = _template(home, 10 if quick else NETWORK_MESSAGES)
        result["network"] = _mail_mode("starttls", over, then, result["runs"], rtt_ms / 1000)
        result["network"] |= {"rtt_ms": rtt_ms, "messages": 10 if quick else NETWORK_MESSAGES}
    for key in ("HANDOFF_SMTP_HOST", "HANDOFF_SMTP_PORT", "HANDOFF_SMTP_USERNAME",
                "HANDOFF_SMTP_PASSWORD", "HANDOFF_SMTP_STARTTLS", "HANDOFF_SMTP_VERIFY_TLS",
                "HANDOFF_DATABASE_URL", "HANDOFF_PLAYBOOK_PATH"):
        os.environ.pop(key, None)
    get_settings.cache_clear()
    return result


def _mail_mode(mode: str, template: Path, now: dt.datetime, repeats: int,
               rtt: float = 0.0) -> dict[str, Any]:
    import yagmail
    from sqlalchemy import select

    from db.models import Communication
    from db.playbook import get_playbook
    from db.session import dispose_all, session_factory
    from db.settings import get_settings
    from tasks.mail import delivery
    from tasks.mail.smtp import SmtpConfig, SmtpTransport
    from tests.bench.network import DelayedLink
    from tests.smtp_server import LoopbackSmtp, self_signed_tls

    home = template.parent
    tls = mode == "starttls"
    context = self_signed_tls(home / "tls")[0] if tls else None
    timings: dict[str, list[float]] = {"outbox_batch": [], "outbox_per_message": [],
                                       "yagmail_default": []}
    connections: dict[str, int] = {}
    with LoopbackSmtp(username="bench", password="bench-secret",
                      starttls_context=context) as smtp, DelayedLink(smtp.port, rtt) as link:
        port = link.port if rtt else smtp.port
        os.environ.update({
            "HANDOFF_SMTP_HOST": "127.0.0.1", "HANDOFF_SMTP_PORT": str(port),
            "HANDOFF_SMTP_STARTTLS": str(tls).lower(), "HANDOFF_SMTP_SSL": "false",
            # A self-signed loopback certificate: verification is exercised by the unit tests.
            "HANDOFF_SMTP_VERIFY_TLS": "false",
            "HANDOFF_SMTP_USERNAME": "bench", "HANDOFF_SMTP_PASSWORD": "bench-secret"})
        get_settings.cache_clear()
        playbook, settings = get_playbook(), get_settings()
        with session_factory(f"sqlite:///{template}")() as session:
            rows = list(session.scalars(select(Communication).order_by(Communication.id)))
            bodies = [(r.recipients.split(","), r.subject, r.body_text) for r in rows]
        dispose_all()
        config = SmtpConfig(host="127.0.0.1", port=port, username="bench",
                            password="bench-secret", starttls=tls, ssl=False, verify_tls=False,
                            sender=str(playbook.business.sender.email), timeout=10)

        class PerMessage(SmtpTransport):
            """The same transport, reconnecting and logging in for every message."""

            def send_all(self, messages: Any) -> Any:
                for msg in messages:
                    self._discard(self._yag)
                    self._yag = None
                    self._open()
                    yield from super().send_all((msg,))

        original = delivery.transport_for

        def outbox_run(per_message: bool) -> float:
            url = fresh_copy(template, home / "run.db")
            factory = session_factory(url)
            if per_message:
                delivery.transport_for = lambda s: PerMessage(config)  # type: ignore[assignment]
            try:
                before = smtp.count_connections
                started = time.perf_counter()
                report = delivery.deliver(factory, playbook, settings, now=now)
                elapsed = time.perf_counter() - started
                assert report.sent == len(bodies), report
                connections["outbox_per_message" if per_message else "outbox_batch"] = \
                    smtp.count_connections - before
            finally:
                delivery.transport_for = original
                dispose_all()
            return elapsed

        def yagmail_run() -> float:
            yag = yagmail.SMTP(user={"bench": "bench"}, password="bench-secret",
                               host="127.0.0.1", port=port, smtp_starttls=tls,
                               smtp_ssl=False, soft_email_validation=False)
            yag.set_logging(None)
            before = smtp.count_connections
            started = time.perf_counter()
            for to, subject, body in bodies:
                yag.send(to=to, subject=subject, contents=[body])  # login() on every send
            elapsed = time.perf_counter() - started
            connections["yagmail_default"] = smtp.count_connections - before
            return elapsed

        for _ in range(repeats):
            timings["outbox_batch"].append(outbox_run(False))
            timings["outbox_per_message"].append(outbox_run(True))
            timings["yagmail_default"].append(yagmail_run())
            smtp.drop_connections()  # yagmail never closes the connections it replaces
            log(f"  mail {mode}{f' over {rtt * 1000:.0f} ms' if rtt else ''}: batch {timings['outbox_batch'][-1]:.2f}s  per-message "
                f"{timings['outbox_per_message'][-1]:.2f}s  yagmail "
                f"{timings['yagmail_default'][-1]:.2f}s for {len(bodies)}")
    return {"msgs_per_s": {k: len(bodies) / median(v) for k, v in timings.items()},
            "connections": connections}


def table(m: dict[str, Any]) -> list[str]:
    net = m.get("network")
    lines = [f"**Mail throughput** ({m['messages']} messages to a loopback SMTP server "
             "with AUTH; the outbox records every result in the database"
             + (f"; over the network: {net['messages']} with STARTTLS, {net['rtt_ms']:.0f} ms "
                "round-trip" if net else "") + ")", "",
             "| path | plain msg/s | STARTTLS msg/s | SMTP connections |"
             + (" STARTTLS over the network, msg/s |" if net else ""),
             "|---|---|---|---|" + ("---|" if net else "")]
    labels = {"outbox_batch": "outbox, one connection per batch, pipelined (one round-trip "
                              "a message)",
              "outbox_per_message": "outbox, connection + login per message",
              "yagmail_default": "yagmail default (`send()` logs in on every call), "
                                 "no outbox"}
    for key, label in labels.items():
        lines.append(f"| {label} | {m['plain']['msgs_per_s'][key]:.0f} | "
                     f"{m['starttls']['msgs_per_s'][key]:.0f} | "
                     f"{m['plain']['connections'].get(key)} |"
                     + (f" {net['msgs_per_s'][key]:.1f} |" if net else ""))
    modes = ("plain", "starttls", "network") if net else ("plain", "starttls")
    ratio = {mode: m[mode]["msgs_per_s"]["outbox_batch"]
             / m[mode]["msgs_per_s"]["outbox_per_message"] for mode in modes}
    bare = {mode: m[mode]["msgs_per_s"]["outbox_batch"]
            / m[mode]["msgs_per_s"]["yagmail_default"] for mode in modes}
    lines += ["", f"One connection per batch vs one per message through the same outbox: "
                  f"{ratio['plain']:.1f}× (plain), {ratio['starttls']:.1f}× (STARTTLS); "
                  f"vs bare yagmail: {bare['plain']:.1f}× / {bare['starttls']:.1f}×."]
    if net:
        lines += ["", f"Over the network (STARTTLS, {net['rtt_ms']:.0f} ms round-trip): "
                      f"{ratio['network']:.1f}× one connection per message through the outbox, "
                      f"**{bare['network']:.1f}× bare yagmail** (target ≥ 5×)."]
    return lines


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mail-rtt", type=float, default=NETWORK_RTT_MS, metavar="MS",
                        help="round-trip of the mail part's network run (0: loopback only)")


PART = Part(name="mail", run=lambda args: bench_mail(args.quick, args.mail_rtt), table=table,
            order=10, arguments=arguments)
