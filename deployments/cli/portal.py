"""`handoff portal link|revoke`: each client's portal link, from the VA's side."""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli.common import ByOpt, JsonOpt, emit, guarded, transaction, when

app = typer.Typer()
IdArg = Annotated[int, typer.Argument(help="Onboarding id.")]


def _describe(state: dict[str, object]) -> str:
    if not state["usable"]:
        why = "revoked" if state["revoked_at"] else "expired or closed"
        return (f"no working link ({why}); 'handoff portal link {state['onboarding']} --rotate' "
                "issues a new one")
    valid = ("while the onboarding is active" if state["expires_at"] is None
             else f"until {state['expires_at']}")
    opened = state["last_opened_at"] or "never"
    return (f"{state['url']}\n  version {state['version']}, valid {valid}; "
            f"last opened in a browser: {opened}")


@app.command("link")
@guarded
def portal_link(
    onboarding_id: IdArg,
    rotate: Annotated[bool, typer.Option("--rotate", help="Issue a new link; every older "
                                         "link stops working.")] = False,
    by: ByOpt = "va",
    as_json: JsonOpt = False,
) -> None:
    """Print the client's portal link (the one in their mail), or rotate it."""
    from tasks.onboarding.records import get_onboarding
    from tasks.portal import links

    with transaction() as (session, playbook):
        if rotate:
            state = links.rotate(session, playbook, onboarding_id, by=by, at=when(None))
        else:
            state = links.link_state(session, playbook, get_onboarding(session, onboarding_id))
        data = state.as_dict()
    emit(as_json, data, ("rotated: the old link no longer works\n" if rotate else "")
         + _describe(data))


@app.command("revoke")
@guarded
def portal_revoke(onboarding_id: IdArg, by: ByOpt = "va", as_json: JsonOpt = False) -> None:
    """Kill the client's portal link now (`link --rotate` issues a new one)."""
    from tasks.portal import links

    with transaction() as (session, playbook):
        data = links.revoke(session, playbook, onboarding_id, by=by, at=when(None)).as_dict()
    emit(as_json, data, f"the portal link of onboarding {onboarding_id} is revoked; the client "
                        "sees 'link not found'")
