"""What people read and type about the risk register: the packet and the status card, the weekly
review's reviews due by owner, the monthly memo's counts by category, and `handoff risk`."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Event
from db.playbook import Playbook
from tasks.onboarding.packet import packet_sections
from tasks.onboarding.status import describe
from tasks.reporting.weekly import build_weekly_review
from tasks.risks.register import close_risk, open_risk, review_risk
from tests.factories import CLOSED, new_onboarding


def hours(n: float) -> dt.timedelta:
    return dt.timedelta(hours=n)


def test_the_packet_and_status_list_open_risks_by_label(
        lite: Session, playbook: Playbook) -> None:
    ob, calm = new_onboarding(lite, playbook), new_onboarding(lite, playbook, client="Calm")
    with lite.begin():
        risk = open_risk(lite, playbook, ob, category="misaligned_scope",
                         note="Client expects a blog", by="va", at=CLOSED).id
    with lite.begin():
        rows = dict(next(s for s in packet_sections(lite, playbook, ob)
                         if s["key"] == "risks")["rows"])
        calm_rows = dict(next(s for s in packet_sections(lite, playbook, calm)
                              if s["key"] == "risks")["rows"])
        card = describe(lite, playbook, ob, now=CLOSED)
    assert rows[f"Open risk #{risk}: Misaligned scope risk"] == (
        f"Client expects a blog — owner va@northwind.example; mitigation: "
        f"{playbook.risks['misaligned_scope'].mitigation}")
    assert not [k for k in calm_rows if k.startswith("Open risk")]
    assert f"risk:    #{risk} Misaligned scope risk, owner va@northwind.example" in card["text"]
    assert [r["id"] for r in card["open_risks"]] == [risk]

    relabelled = playbook.model_copy(update={"risks": {**playbook.risks, "misaligned_scope":
        playbook.risks["misaligned_scope"].model_copy(update={"label": "Scope drift"})}})
    with lite.begin():
        rows = dict(next(s for s in packet_sections(lite, relabelled, ob)
                         if s["key"] == "risks")["rows"])
        close_risk(lite, risk, note="Scope restated and signed", by="va", at=CLOSED)
    assert f"Open risk #{risk}: Scope drift" in rows
    with lite.begin():
        rows = dict(next(s for s in packet_sections(lite, playbook, ob)
                         if s["key"] == "risks")["rows"])
    assert not [k for k in rows if k.startswith("Open risk")]


def test_the_weekly_review_lists_the_reviews_due_by_owner(
        lite: Session, playbook: Playbook) -> None:
    # Opened Mon 11-30 10:00 New York; the weekly review runs Mon 12-07 08:00.
    opened_at = dt.datetime(2026, 11, 30, 15, 0, tzinfo=dt.UTC)
    week = dt.datetime(2026, 12, 7, 13, 0, tzinfo=dt.UTC)
    slow = playbook.model_copy(update={"risks": {**playbook.risks, "handoff_quality":
        playbook.risks["handoff_quality"].model_copy(update={"review_every": 10})}})
    ob = new_onboarding(lite, playbook)
    with lite.begin():
        made = {c: open_risk(lite, slow, ob, category=c, note="n", by="va", at=opened_at).id
                for c in ("kickoff_delay", "handoff_quality", "misaligned_scope",
                          "incomplete_intake")}
        close_risk(lite, made["incomplete_intake"], note="intake done", by="va",
                   at=opened_at + hours(1))
        reviewed = review_risk(lite, slow, made["misaligned_scope"], note="client agreed",
                               by="va", at=opened_at + hours(2))
    # misaligned_scope reviewed Mon 12:00 + 3 business days = Thu 12-03 12:00 New York.
    assert reviewed.next_review_at == dt.datetime(2026, 12, 3, 17, 0, tzinfo=dt.UTC)
    with lite.begin():
        review = build_weekly_review(lite, playbook, week)
    # kickoff_delay: due Wed 12-02 (2 days), overdue; misaligned_scope due Thu 12-03, overdue;
    # handoff_quality every 10 business days: Mon 12-14, after this week; intake closed.
    assert [(o["owner"], [r["id"] for r in o["risks"]]) for o in review.risk_reviews] == [
        ("va@northwind.example", [made["kickoff_delay"], made["misaligned_scope"]])]
    assert "## 6. Risk reviews due this week, by owner" in review.markdown
    assert (f"- va@northwind.example: risk #{made['kickoff_delay']} Kickoff delay risk — Acme "
            "Dental, due Wed 02 Dec; ") in review.markdown
    with lite.begin():
        review = build_weekly_review(lite, playbook, week + dt.timedelta(days=7))
    owners = {o["owner"]: [r["id"] for r in o["risks"]] for o in review.risk_reviews}
    assert owners == {"ops@northwind.example": [made["handoff_quality"]],
                      "va@northwind.example": [made["kickoff_delay"], made["misaligned_scope"]]}


def _cli(lite: Session, *args: str, refused: str | None = None) -> Any:
    """Run `handoff ARGS` in process; a refusal is one line naming `refused`, nothing written."""
    from typer.testing import CliRunner

    from deployments.cli import app
    from tests.factories import snapshot

    before = snapshot(lite)
    result = CliRunner().invoke(app, list(args))
    if refused is None:
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads(result.stdout) if "--json" in args else result.stdout
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and refused in lines[0], lines
    assert snapshot(lite) == before
    return None


def test_risk_commands_and_their_refusals(lite: Session, playbook: Playbook) -> None:
    ob = str(new_onboarding(lite, playbook))
    made = _cli(lite, "risk", "open", ob, "--category", "kickoff_delay", "--note",
                "Client travelling until the 10th", "--json")
    rid = str(made["risk"])
    assert made["owner"] == "va@northwind.example"  # lane A's owner
    _cli(lite, "risk", "open", ob, "--category", "gut_feeling", "--note", "x",
         refused="--category 'gut_feeling' is not known")
    _cli(lite, "risk", "open", ob, "--category", "kickoff_delay", refused="--note")
    _cli(lite, "risk", "open", ob, "--category", "kickoff_delay", "--note", "again",
         refused=f"already has an open kickoff_delay risk (risk {rid})")
    _cli(lite, "risk", "open", "999", "--category", "kickoff_delay", "--note", "x",
         refused="999")
    _cli(lite, "risk", "review", rid, refused="--note")
    _cli(lite, "risk", "close", rid, "--note", "  ", refused="--note")
    _cli(lite, "risk", "close", "77", "--note", "x", refused="risk 77 does not exist")
    assert "next review due" in _cli(lite, "risk", "review", rid, "--note", "Slots offered")
    assert [r["id"] for r in _cli(lite, "risk", "list", "--open", "--json")] == [int(rid)]
    assert _cli(lite, "risk", "close", rid, "--note", "Kickoff held").strip() == (
        f"risk {rid} closed")
    _cli(lite, "risk", "close", rid, "--note", "again", refused=f"risk {rid} is already closed")
    _cli(lite, "risk", "review", rid, "--note", "late", refused=f"risk {rid} is already closed")
    assert _cli(lite, "risk", "list", "--open").strip() == "no open risks"
    (row,) = _cli(lite, "risk", "list", "--json")
    assert (row["open"], row["close_note"], row["label"]) == (False, "Kickoff held",
                                                              "Kickoff delay risk")
    with lite.begin():
        kinds = list(lite.scalars(select(Event.kind).where(Event.kind.like("risk_%"))
                                  .order_by(Event.id)))
    assert kinds == ["risk_opened", "risk_reviewed", "risk_closed"]


def test_the_monthly_memo_counts_risks_by_category(lite: Session, playbook: Playbook) -> None:
    from tasks.mail.render import render_message
    from tasks.reporting.memo import build_memo, memo_context

    first, second = new_onboarding(lite, playbook), new_onboarding(lite, playbook, client="B")
    with lite.begin():
        for ob in (first, second):
            open_risk(lite, playbook, ob, category="kickoff_delay", note="n", by="va",
                      at=CLOSED)
        done = open_risk(lite, playbook, first, category="handoff_quality", note="n", by="va",
                         at=CLOSED)
        close_risk(lite, done.id, note="fixed", by="va", at=CLOSED + hours(2))
        memo = build_memo(lite, playbook, "2026-11")
    counts = {r["category"]: (r["opened"], r["closed"], r["open"])
              for r in memo.context["memo"]["risks"]}
    assert counts == {"incomplete_intake": (0, 0, 0), "kickoff_delay": (2, 0, 2),
                      "misaligned_scope": (0, 0, 0), "handoff_quality": (1, 1, 0),
                      "communication_reliability": (0, 0, 0)}
    text = render_message("monthly_memo", memo_context(memo, inline=False)).text
    assert "- Kickoff delay risk: 2 opened, 0 closed, 2 open at month end" in text
    assert "- Handoff quality risk: 1 opened, 1 closed, 0 open at month end" in text
    assert "Incomplete client intake risk" not in text
