"""One typed settings class for every process, read from SKIPWATCH_* environment variables.

Nested groups use a double underscore: SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS, SKIPWATCH_REDIS__URL, ...
A wrong or missing value stops start-up with a message naming the variable.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from rules.config import EngineConfig
from rules.events.bounds import DAY_S, DEFAULT_MAX_AGE_S, DEFAULT_MAX_FUTURE_SKEW_S, TimeWindow
from services.notify.sealing import check_key

ENV_PREFIX = "SKIPWATCH_"
# The well-known key docker-compose.yml encrypts webhook secrets with (`make up`); refused in prod.
DEV_NOTIFY_SECRET_KEY = "ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQta2V5LWxvY2E="
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]*$", max_length=100)] = "skipwatch."
    partitions: Annotated[int, Field(ge=1, le=1024)] = 4
    replication_factor: Annotated[int, Field(ge=1, le=10)] = 1
    # How long a producer may wait for the broker before an ingest request answers 503.
    produce_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    client_id: str = "skipwatch"


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: Annotated[str, Field(max_length=100)] = "skipwatch:"


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    max_batch_items: Annotated[int, Field(ge=1, le=100_000)] = 5000
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    # Run the projector (Kafka -> Redis view) inside the API process, so `skipwatch api` alone
    # serves live alerts. Turn off where a separate process projects, or for ingest-only nodes.
    projector_enabled: bool = True
    # Also read payments, contacts and (sampled) pings for loan timelines.
    projector_timeline: bool = True
    # A loan timeline keeps every ping alarm but at most one position per device per interval.
    timeline_ping_interval_s: Annotated[float, Field(ge=0)] = 600.0
    timeline_cap: Annotated[int, Field(ge=10, le=10_000)] = 200
    # Comment lines on idle server-sent-event streams keep proxies from closing them.
    sse_heartbeat_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    # Loan tracks (services/track.py): every moving fix, one per interval while parked, kept
    # for this long behind the loan's newest fix and at most this many fixes per loan.
    track_enabled: bool = True
    track_parked_interval_s: Annotated[float, Field(ge=0, le=86_400)] = 900.0
    track_retention_h: Annotated[float, Field(gt=0, le=24 * 90)] = 168.0
    track_max_fixes: Annotated[int, Field(ge=100, le=100_000)] = 5000
    # Dashboard map tiles: an XYZ URL template ("" = no tiles, plain background), its
    # attribution, and the tiles' datum (gcj02: Chinese providers; positions are shifted).
    map_tiles_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    map_tiles_attribution: str = "© OpenStreetMap contributors"
    map_tiles_crs: Literal["wgs84", "gcj02"] = "wgs84"

    @field_validator("map_tiles_url")
    @classmethod
    def _tile_template(cls, value: str) -> str:
        if value and (
            not value.startswith(("https://", "http://"))
            or not all(p in value for p in ("{z}", "{x}", "{y}"))
        ):
            raise ValueError(
                "must be an http(s) URL template with {z}, {x} and {y} (or empty for no tiles)"
            )
        return value


class AuthSettings(BaseModel):
    """API credentials. Tokens map to a role; vendor ingest keys map to a vendor name.

    SKIPWATCH_AUTH__TOKENS='{"<token>": "admin", "<token2>": "viewer"}'
    SKIPWATCH_AUTH__INGEST_KEYS='{"<key>": "vendor-a"}'
    SKIPWATCH_AUTH__VENDOR_HMAC_SECRETS='{"vendor-a": "<secret>"}'  (optional body signatures)
    """

    # Local development only: lets `skipwatch up` run with short, well-known tokens.
    allow_insecure_dev_tokens: bool = False
    tokens: dict[str, Literal["viewer", "operator", "admin"]] = Field(default_factory=dict)
    ingest_keys: dict[str, str] = Field(default_factory=dict)
    vendor_hmac_secrets: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("tokens", "ingest_keys")
    @classmethod
    def _strong(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if not info.data.get("allow_insecure_dev_tokens") and any(len(t) < 16 for t in value):
            raise ValueError(
                "every token must be at least 16 characters (set "
                "SKIPWATCH_AUTH__ALLOW_INSECURE_DEV_TOKENS=true only for local development)"
            )
        return value


# The worker's exit code for "restart me" (EX_TEMPFAIL): its watchdog found a stalled rebalance.
EXIT_RESTART = 75


class WorkerSettings(BaseModel):
    store: Annotated[str, Field(pattern=r"^(memory|rocksdb)://.*$")] = "memory://"
    data_dir: Path = PROJECT_ROOT / ".skipwatch" / "worker"
    # The worker's operations port (0: none): /metrics, /healthz (liveness), /readyz.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9101
    metrics_host: str = "127.0.0.1"  # containers: 0.0.0.0 (deploy/Dockerfile)
    # /healthz fails when the event loop has not run the heartbeat timer for this long.
    loop_stall_s: Annotated[float, Field(ge=5)] = 60.0
    # "wall": `now` is the wall clock (live). "event": `now` is the event-time watermark, for
    # replaying recordings and for tests; absence deadlines then fire as event time passes them.
    clock: Literal["wall", "event"] = "wall"
    # A record that entered Kafka more than this after its event time is late (history, not
    # live); with the event clock, `now` trails the newest event time released by this much.
    allowed_lateness_s: Annotated[float, Field(ge=0)] = 300.0
    # An input partition read to its high-water mark with nothing new for this long stops
    # holding the others back (rules/clock.py); 0: as soon as it is caught up.
    idle_partition_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    # A gps.raw partition another worker binds holds this worker's clock while its binder's
    # marks say records are unbound (rules/clock.py); when no mark of it moved for this long
    # (its binder dead and no rebalance came, or stuck) it is left out, and a warning logged.
    # Above the session timeout plus a rebalance: a takeover normally comes long before.
    source_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    # Rule files and risk-place files; default: the shipped rules/catalog/.
    rules_dir: Path | None = None
    places_dir: Path | None = None
    # How long a silent worker keeps its partitions before the others take them over.
    session_timeout_s: Annotated[float, Field(ge=6, le=300)] = 30.0
    # Decoded states of this many recently touched loans are kept (≈5 KiB each) besides the
    # table's bytes; 0 turns the cache off.
    state_cache_size: Annotated[int, Field(ge=0, le=10_000_000)] = 20_000
    # Static group membership (Kafka group.instance.id), e.g. the StatefulSet pod name: a worker
    # that restarts within the session timeout gets its partitions back without a rebalance.
    instance_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,200}$")] | None = None
    # A rebalance or table recovery that makes no progress for this long stops the worker with
    # exit code 75, for its supervisor (Kubernetes, compose, `skipwatch up`) to restart it.
    recovery_stall_s: Annotated[float, Field(ge=5)] = 120.0

    @model_validator(mode="after")
    def _lateness_fits_the_engine(self) -> WorkerSettings:
        # With the event clock `now` trails the newest released event time by the lateness, so
        # every newer event is that far ahead of `now`: at or beyond the engine's own limit on
        # events ahead of its clock, each would be refused (dead-lettered `ahead_of_clock`).
        limit = EngineConfig().max_future_skew_s
        if self.clock == "event" and self.allowed_lateness_s >= limit:
            raise ValueError(
                f"allowed_lateness_s={self.allowed_lateness_s:.0f} with clock=event must be below "
                f"the engine's limit on events ahead of its clock ({limit:.0f} s): `now` trails "
                "the newest event by the lateness, so newer events would all be refused"
            )
        return self

    @model_validator(mode="after")
    def _source_timeout_above_session(self) -> WorkerSettings:
        if self.source_timeout_s <= self.session_timeout_s:
            raise ValueError(
                f"source_timeout_s ({self.source_timeout_s}) must be above session_timeout_s "
                f"({self.session_timeout_s}): a dead binder's partitions are taken over only "
                "after the session timeout"
            )
        return self


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 6808
    max_connections: Annotated[int, Field(ge=1)] = 20_000
    idle_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    vendor_config: Path | None = None
    # Trackers must authenticate (0x0102) before their data is accepted.
    require_auth: bool = True
    # HMAC key for the auth codes handed out at registration; without it any code is accepted.
    auth_secret: SecretStr | None = None
    # The gateway's operations port (0: none): /metrics, /healthz (liveness), /readyz.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9808
    metrics_host: str = "127.0.0.1"  # containers: 0.0.0.0 (deploy/Dockerfile)
    # /healthz fails when the gateway's event loop has not run for this long.
    loop_stall_s: Annotated[float, Field(ge=5)] = 60.0


class BoundsSettings(BaseModel):
    """The event-time window of every front door (rules/events/bounds.py, docs/reliability.md).

    An event time more than `max_future_skew_s` ahead of its arrival, or more than `max_age_s`
    before it, is rejected naming `ts`. The skew may not exceed the engine's own future limit
    (one day), so that nothing a front door accepted is dropped by the engine later.
    """

    max_future_skew_s: Annotated[float, Field(ge=0, le=DAY_S)] = DEFAULT_MAX_FUTURE_SKEW_S
    max_age_s: Annotated[float, Field(gt=0, le=100 * 365 * DAY_S)] = DEFAULT_MAX_AGE_S

    def window(self) -> TimeWindow:
        return TimeWindow(self.max_future_skew_s, self.max_age_s)


class NotifySettings(BaseModel):
    """The dispatcher (services/notify): routing, destinations, retries.

    SKIPWATCH_NOTIFY__ALLOW_LIST='["127.0.0.1", "10.1.0.0/16", "hooks.internal"]'
    SKIPWATCH_NOTIFY__RETRY_SCHEDULE_S='[0, 1, 1]'   (tests: fast retries)
    """

    # The routing config (YAML); None: every alert goes to the API-managed webhooks only.
    routing_config: Path | None = None
    # Hosts (exact names), addresses or networks (CIDR) a destination may resolve to although
    # they are private, loopback, link-local or otherwise not public (SSRF guard).
    allow_list: list[str] = Field(default_factory=list)
    # Seconds to wait before each attempt; the first entry is the first try (Svix's schedule).
    retry_schedule_s: Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)] = [
        0, 5, 300, 1800, 7200, 18000, 36000, 36000
    ]  # fmt: skip
    # Each wait is stretched or shrunk by up to this fraction at random (no thundering herd).
    retry_jitter: Annotated[float, Field(ge=0, le=1)] = 0.2
    # An endpoint whose deliveries have failed, without one success, for this long is disabled.
    disable_after_s: Annotated[float, Field(gt=0)] = 5 * 86400.0
    # Finished deliveries (delivered, dead, failed) are kept this long after their last attempt,
    # for the API's delivery list and redelivery, then deleted.
    delivery_retention_s: Annotated[float, Field(ge=1)] = 7 * 86400.0
    attempt_timeout_s: Annotated[float, Field(gt=0, le=120)] = 15.0
    # In-flight requests per endpoint; one slow endpoint never uses another's slots.
    endpoint_concurrency: Annotated[int, Field(ge=1, le=100)] = 4
    # Links in messages point here: <dashboard_url>/#/alerts/<alert id>.
    dashboard_url: str = "http://127.0.0.1:8000"
    # The dispatcher's operations port (0: none): /metrics, /healthz.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9102
    metrics_host: str = "127.0.0.1"
    # Fernet keys encrypting the webhook signing secrets kept in the endpoints topic: the first
    # encrypts, every one decrypts (rotation: put a new key first, keep the old ones until every
    # endpoint has been written again). JSON list: SKIPWATCH_NOTIFY__SECRET_KEYS='["…"]'.
    # Without a key, creating a webhook endpoint is refused, and so is starting while endpoints
    # with secrets exist. docker-compose.yml sets a dev-only key for `make up`.
    secret_keys: list[SecretStr] = Field(default_factory=list)

    @field_validator("secret_keys")
    @classmethod
    def _fernet_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for index, key in enumerate(value):
            try:
                check_key(key.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"key {index}: {exc}") from None
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    env: Literal["dev", "test", "prod"] = "dev"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    bounds: BoundsSettings = Field(default_factory=BoundsSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @model_validator(mode="after")
    def _safe_in_prod(self) -> Settings:
        if self.env == "prod" and self.auth.allow_insecure_dev_tokens:
            raise ValueError("auth.allow_insecure_dev_tokens must be false when env=prod")
        if self.env == "prod" and any(
            k.get_secret_value() == DEV_NOTIFY_SECRET_KEY for k in self.notify.secret_keys
        ):
            raise ValueError("notify.secret_keys holds docker-compose.yml's dev key (env=prod)")
        return self

    def topic(self, name: str) -> str:
        """Full topic name for an unprefixed one, e.g. ``gps.raw`` -> ``skipwatch.gps.raw``."""
        return f"{self.kafka.topic_prefix}{name}"


class SettingsError(RuntimeError):
    """Configuration that cannot start the service; the message names the variables."""


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def load_settings() -> Settings:
    """Read settings from the environment; raise SettingsError naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = [f"{_env_name(err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)]
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return load_settings()
