"""Readable names for what the Prefect UI shows."""

from __future__ import annotations

from db.session import transaction
from tasks.onboarding import records


def onboarding_run_name(onboarding_id: int) -> str:
    """'Acme Dental #12': the client's name, so the UI list reads as the portfolio; a demo
    client's run says so ('Acme Dental #12 (demo)')."""
    with transaction() as session:
        ob = records.get_onboarding(session, onboarding_id)
        return f"{ob.client_name} #{ob.id}" + (" (demo)" if ob.demo else "")
