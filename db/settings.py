"""One typed Settings object, read from the environment (prefix HANDOFF_) or a .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.validation import HandoffError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

_PLACEHOLDER_SECRETS = {"changeme", "change-me", "password", "secret", "xxx"}


class Settings(BaseSettings):
    """Everything that differs between machines; the operating model lives in the playbook."""

    model_config = SettingsConfigDict(env_prefix="HANDOFF_", env_file=".env", extra="ignore")

    home: Path = PROJECT_ROOT / "var"
    database_url: str = ""
    playbook_path: Path = PROJECT_ROOT / "deployments" / "playbook.yaml"

    sqlite_busy_ms: int = 15000  # how long a SQLite writer waits for another before failing
    prefect_api_url: str = "http://127.0.0.1:4200/api"
    prefect_timeout: float = 5.0  # connect and read, per Prefect API call from the CLI
    onboarding_deployment: str = "client-onboarding/client-onboarding"
    # Client runs starting at once (Scheduled, Pending or Running; Suspended ones hold none);
    # the rest wait in run_starts. Keep it below the runner's --limit.
    run_starts_in_flight: int = 4
    # CPU priority (nice, 0-19) of the flow runs a runner or worker executes: runs are background
    # work, so in a burst the VA's commands, the portal and the Prefect API answer first.
    run_niceness: Annotated[int, Field(ge=0, le=19)] = 10
    # `python -m deployments.serve` starts the warm CLI process (deployments/warm.py): `handoff`
    # commands run in a child forked from it instead of importing everything each time.
    warm_cli: bool = True

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    smtp_verify_tls: bool = True
    smtp_timeout: float = 30.0  # waiting for a reply, the one after the message included
    smtp_connect_timeout: float = 10.0  # connect, greeting, EHLO, STARTTLS, AUTH: each step

    # Won deals from CRMs and payment providers (webhooks refuse every request while unset).
    hubspot_client_secret: SecretStr | None = None  # the app's client secret (signs webhooks)
    hubspot_webhook_url: str | None = None  # the public URL pasted into HubSpot, exactly
    hubspot_token: SecretStr | None = None  # private app access token, to read deals/contacts
    hubspot_api_url: str = "https://api.hubapi.com"
    pipedrive_webhook_user: str | None = None  # HTTP basic auth set on the Pipedrive webhook
    pipedrive_webhook_password: SecretStr | None = None
    pipedrive_api_token: SecretStr | None = None  # to read persons and won deals
    pipedrive_api_url: str = "https://api.pipedrive.com"
    stripe_webhook_secret: SecretStr | None = None  # whsec_… of the Stripe endpoint
    generic_webhook_secret: SecretStr | None = None  # HMAC key for /hooks/generic
    # Team alert channels by name (JSON object of Apprise URLs); the playbook routes lanes to names.
    alert_urls: dict[str, SecretStr] = {}

    # The mailbox client replies come back to (read by the inbox sweep; unset: not read).
    imap_host: str | None = None
    imap_port: int | None = None  # 993 with SSL, 143 with STARTTLS
    imap_username: str | None = None
    imap_password: SecretStr | None = None
    imap_folder: str = "INBOX"
    imap_ssl: bool = True
    imap_starttls: bool = False
    imap_cafile: Path | None = None  # a private CA; the system's trusted CAs otherwise
    imap_timeout: float = 30.0
    # Reply-To on client mail: onboarding+<id>-<signature>@domain, signed with secret_key.
    reply_to: str | None = None
    secret_key: SecretStr | None = None

    # The client portal (deployments/web): its own process, the one part facing the internet.
    portal_enabled: bool = True  # `python -m deployments.serve` starts it next to the runner
    portal_host: str = "127.0.0.1"
    portal_port: int = 8400
    portal_public_url: str = ""  # what links in mail start with; default http://host:port
    portal_secret: SecretStr | None = None  # link key; default: generated into home/portal.secret
    portal_max_form_bytes: int = 64 * 1024  # a POST without files
    portal_max_file_bytes: int = 10 * 1024 * 1024  # one uploaded file
    portal_max_upload_bytes: int = 25 * 1024 * 1024  # one upload request, all files together
    portal_guess_limit: int = 20  # unknown links per client address per window, then 429
    portal_guess_window_s: int = 600
    portal_trusted_proxies: str = "127.0.0.1"  # whose X-Forwarded-For/-Proto uvicorn believes

    @field_validator("database_url")
    @classmethod
    def _normalise_driver(cls, value: str) -> str:
        """Accept the URLs people paste and pin the drivers this project ships."""
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("smtp_password", "imap_password", "secret_key")
    @classmethod
    def _refuse_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        """Refuse an obviously placeholder secret rather than failing when it is used."""
        if value is not None and value.get_secret_value().strip().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("a placeholder, not a real secret; set the real value")
        return value

    @model_validator(mode="after")
    def _inbox_consistent(self) -> Settings:
        """A mailbox is read over verified TLS with a login; a signed Reply-To needs its key."""
        if self.imap_host:
            if not (self.imap_ssl or self.imap_starttls):
                raise ValueError("HANDOFF_IMAP_SSL and HANDOFF_IMAP_STARTTLS are both false; "
                                 "the mailbox is only read over TLS: enable one")
            if not self.imap_username or self.imap_password is None:
                raise ValueError("HANDOFF_IMAP_HOST is set: set HANDOFF_IMAP_USERNAME and "
                                 "HANDOFF_IMAP_PASSWORD too")
        if self.reply_to and self.secret_key is None:
            raise ValueError("HANDOFF_REPLY_TO is set: set HANDOFF_SECRET_KEY too (it signs "
                             "the reply addresses)")
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        """Default to the embedded SQLite database under the home directory."""
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.home / 'handoff.db').resolve()}"
        return self

    @field_validator("portal_public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        """An absolute http(s) URL without a trailing slash (links append /c/<token>)."""
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"HANDOFF_PORTAL_PUBLIC_URL {value!r} must start with https:// "
                             "(or http:// on loopback)")
        return value

    @property
    def portal_base_url(self) -> str:
        """The portal's address as clients reach it (behind a proxy: the public URL)."""
        return self.portal_public_url or f"http://{self.portal_host}:{self.portal_port}"

    @property
    def portal_secret_path(self) -> Path:
        """Where the generated link key lives: beside the database, never inside it."""
        return self.home / "portal.secret"

    @property
    def uploads_dir(self) -> Path:
        """Files clients upload through the portal, one folder per onboarding."""
        return self.home / "uploads"

    @property
    def imap_port_or_default(self) -> int:
        """The IMAP port: as configured, else 993 for implicit TLS and 143 for STARTTLS."""
        return self.imap_port or (993 if self.imap_ssl else 143)

    @property
    def results_dir(self) -> Path:
        """Durable Prefect result storage, so resumed runs find what earlier runs persisted."""
        return self.home / "prefect-results"

    @property
    def outbox_dir(self) -> Path:
        """Where mail goes as .eml files when no SMTP host is configured."""
        return self.home / "outbox"

    @property
    def reports_dir(self) -> Path:
        """Where rendered reports and memos are written."""
        return self.home / "reports"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings instance (tests clear the cache after changing the env).

    A bad setting is one line naming the variable and what is expected (never its value: it
    may be a secret), not a validation dump."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = f"HANDOFF_{str(first['loc'][0]).upper()}: " if first["loc"] else ""
        raise SettingsError(f"invalid settings: {where}"
                            f"{first['msg'].removeprefix('Value error, ')}") from None


class SettingsError(HandoffError):
    """The environment (or .env) holds a setting that cannot work."""
