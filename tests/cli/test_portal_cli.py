"""`handoff portal link|revoke`, `handoff intake show` and the link in `handoff status`."""

from __future__ import annotations

import json

from tests.cli.test_cli import onboard, refused, run


def test_link_rotate_revoke_and_status(sqlite_url: str) -> None:
    ob_id = onboard(sqlite_url)
    first = json.loads(run(sqlite_url, "portal", "link", str(ob_id), "--json").stdout)
    assert first["usable"] and first["version"] == 1 and first["expires_at"] is None
    assert first["url"].startswith("http://127.0.0.1:8400/c/1-")
    assert first["url"] in run(sqlite_url, "status", str(ob_id)).stdout  # same link as in mail
    assert run(sqlite_url, "portal", "link", str(ob_id)).stdout.startswith(first["url"])
    rotated = json.loads(run(sqlite_url, "portal", "link", str(ob_id), "--rotate",
                             "--json").stdout)
    assert rotated["version"] == 2 and rotated["url"] != first["url"]
    run(sqlite_url, "portal", "revoke", str(ob_id))
    card = json.loads(run(sqlite_url, "status", str(ob_id), "--json").stdout)
    assert card["portal"]["usable"] is False and card["portal"]["url"] is None
    refused(sqlite_url, "portal", "revoke", str(ob_id), match="already revoked")
    refused(sqlite_url, "portal", "link", "99", match="onboarding 99 does not exist")
    again = json.loads(run(sqlite_url, "portal", "link", str(ob_id), "--rotate", "--json").stdout)
    assert again["usable"] and again["version"] == 3


def test_intake_show_lists_every_question(sqlite_url: str) -> None:
    ob_id = onboard(sqlite_url)
    text = run(sqlite_url, "intake", "show", str(ob_id)).stdout
    assert "not submitted yet" in text and "Day-to-day contact: —" in text
    data = json.loads(run(sqlite_url, "intake", "show", str(ob_id), "--json").stdout)
    assert data["submitted_at"] is None and data["answers"] == {} and data["files"] == []
