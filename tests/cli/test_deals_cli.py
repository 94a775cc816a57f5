"""`handoff deals poll|list` through the real console script, the CRM's recorded responses on
loopback: a VA can run the poll by hand and see which deal started which onboarding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.deals.crm_server import RecordedCrm

HANDOFF = Path(sys.executable).with_name("handoff")


def handoff(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HANDOFF), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_poll_by_hand_then_list(sqlite_url: str) -> None:
    with RecordedCrm() as crm:
        env = {**os.environ, "HANDOFF_HUBSPOT_TOKEN": "pat-test",
               "HANDOFF_HUBSPOT_API_URL": crm.url}
        wrong = handoff(env, "deals", "poll", "--source", "pipedrive")
        assert (wrong.returncode, wrong.stderr.strip()) == (
            2, "error: --source 'pipedrive' is not a configured CRM; configured: hubspot")
        first = handoff(env, "deals", "poll", "--json")
        assert first.returncode == 0, first.stderr
        again = handoff(env, "deals", "poll", "--json")
        crm.down = True
        down = handoff(env, "deals", "poll")
    created = json.loads(first.stdout)["hubspot"]["created"]
    assert len(created) == 1 and json.loads(again.stdout)["hubspot"]["created"] == []
    assert down.returncode == 2
    assert down.stderr.strip() == ("error: hubspot API answered 503 to /crm/v3/objects/deals/"
                                   "search; the cursor is unchanged, try again later")
    listed = json.loads(handoff(env, "deals", "list", "--json").stdout)
    assert [(d["source"], d["deal"], d["onboarding"], d["via"]) for d in listed] == [
        ("hubspot", "2001", created[0], "poll")]
