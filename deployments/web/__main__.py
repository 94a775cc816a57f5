"""`python -m deployments.web`: serve the web app with uvicorn on HANDOFF_PORTAL_HOST:PORT.

`python -m deployments.serve` serves it on a thread of the runner's process; run this instead
(with HANDOFF_PORTAL_ENABLED=false for the runner) to give the portal its own process,
supervisor or machine.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from db.settings import Settings, get_settings


def uvicorn_config(settings: Settings, host: str | None = None, port: int | None = None,
                   forwarded_allow_ips: str | None = None) -> uvicorn.Config:
    """How the portal is served, wherever it runs. No access log: paths carry client links."""
    from deployments.web.app import create_app

    return uvicorn.Config(
        create_app(settings), host=host or settings.portal_host,
        port=port or settings.portal_port, log_level="warning", access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips or settings.portal_trusted_proxies,
        server_header=False, date_header=False, timeout_keep_alive=5, limit_concurrency=512,
        lifespan="off")


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m deployments.web")
    parser.add_argument("--host", default=settings.portal_host)
    parser.add_argument("--port", type=int, default=settings.portal_port)
    parser.add_argument("--forwarded-allow-ips", default=settings.portal_trusted_proxies,
                        help="proxies whose X-Forwarded-For/-Proto are trusted")
    args = parser.parse_args(argv)
    from tasks.portal.links import master_key

    master_key(settings)  # create the key file now, not on the first request
    uvicorn.Server(uvicorn_config(settings, args.host, args.port,
                                  args.forwarded_allow_ips)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
