"""The operating model, loaded from deployments/playbook.yaml into validated pydantic models.

parts: one model per section (calendar, lanes, stages, SLAs, blockers, deals...); model: the
Playbook with its cross-section checks and lookups; load: reading, shape checks and the cache.
Callers import from here.
"""

from db.playbook.load import SAFE_LOADER, get_playbook, load_playbook
from db.playbook.model import STAGE_ORDER, Playbook, PlaybookError
from db.playbook.parts import WEEKDAYS, CadenceEnd, Calendar, Deals, Gate, TimeUnit

__all__ = ["SAFE_LOADER", "STAGE_ORDER", "WEEKDAYS", "CadenceEnd", "Calendar", "Deals", "Gate",
           "Playbook", "PlaybookError", "TimeUnit", "get_playbook", "load_playbook"]
