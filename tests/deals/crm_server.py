"""Recorded HubSpot and Pipedrive API responses (tests/data/deals/crm/) served on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

RECORDED = Path(__file__).resolve().parents[1] / "data" / "deals" / "crm"

ROUTES = {
    ("GET", "/crm/v3/objects/deals/2001"): "hubspot_deal_2001.json",
    ("POST", "/crm/v3/objects/contacts/batch/read"): "hubspot_contacts_batch.json",
    ("POST", "/crm/v3/objects/companies/batch/read"): "hubspot_companies_batch.json",
    ("POST", "/crm/v3/objects/deals/search"): "hubspot_search_won.json",
    ("GET", "/api/v2/persons/3"): "pipedrive_person_3.json",
    ("GET", "/api/v2/organizations/2"): "pipedrive_organization_2.json",
    ("GET", "/api/v2/deals"): "pipedrive_deals_won.json",
}


class RecordedCrm:
    """A loopback HTTP server answering the recorded calls; remembers every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append({"method": self.command, "path": parts.path,
                                       "query": parts.query, "headers": dict(self.headers),
                                       "json": json.loads(body) if body else None})
                name = ROUTES.get((self.command, parts.path))
                status = 503 if outer.down else 200 if name else 404
                payload = (RECORDED / name).read_bytes() if name and status == 200 else b"{}"
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RecordedCrm:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
