"""The web app: the client portal (and, beside it, provider webhooks), served by uvicorn."""
