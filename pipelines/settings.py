"""One frozen settings object, read from the environment (prefix REMOVAL_AUDIT_) or an .env
file when the CLI starts, never at import time. Beam options are derived in `batch.py`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from connectors.duckdb_limits import AuditorLimits


class Settings(BaseSettings):
    """Example: REMOVAL_AUDIT_DATABASE=audit.duckdb REMOVAL_AUDIT_DEFAULT_SLA_HOURS=48"""

    model_config = SettingsConfigDict(
        env_prefix="REMOVAL_AUDIT_",
        env_file=".env",
        env_ignore_empty=True,
        frozen=True,
        extra="ignore",
    )

    database: Path = Field(
        default=Path(".demo/removal-audit.duckdb"), description="DuckDB file the audit lands in."
    )
    data_dir: Path = Field(
        default=Path(".demo/data"),
        description="Where `generate` writes and `run` reads Avro files.",
    )
    default_sla_hours: float = Field(
        default=24.0, gt=0, description="Deadline for requests no SLA policy rule covers (flagged)."
    )
    max_clock_skew_seconds: int = Field(
        default=300,
        ge=0,
        description="How far in the future an event time may be before quarantine.",
    )
    oldest_plausible: datetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description="Event times before this are quarantined as implausibly old.",
    )
    max_message_bytes: int = Field(
        default=1_048_576, gt=0, description="Larger messages are quarantined as oversize."
    )
    schemas_dir: Path | None = Field(
        default=None,
        description="Site schema catalog (a directory with catalog.json and the .avsc files "
        "it lists) used instead of the packaged schemas/, e.g. to register a version "
        "producers already write before the pipeline reads it (default: the packaged one).",
    )
    quality_gate: bool = Field(
        default=True,
        description="Validate every landed batch with the suites of expectations/ before "
        "auditors see it (a failing batch is held).",
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:19092", description="Kafka brokers (`make kafka` listens here)."
    )
    kafka_topic_prefix: str = Field(default="", description="Prefix of both topic names.")
    kafka_group_id: str = Field(
        default="removal-audit",
        description="Consumer group the streaming job commits landed offsets to, for lag "
        "monitoring (empty: none). Restarts resume from DuckDB's ledger, not from it.",
    )
    kafka_security_protocol: str = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: str | None = Field(default=None, description="e.g. PLAIN, SCRAM-SHA-512.")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_password: SecretStr | None = None
    max_out_of_orderness_seconds: float = Field(
        default=60.0, ge=0, description="How far event times may run out of order on a partition."
    )
    idle_timeout_seconds: float = Field(
        default=30.0, ge=0, description="A caught-up partition quiet this long stops holding time."
    )

    snapshot: Path | None = Field(
        default=None,
        description="Read-only copy auditors query while the streaming job writes "
        "(default: <database>.snapshot.duckdb beside the database).",
    )
    snapshot_every_seconds: float = Field(
        default=30.0, ge=0, description="How often the streaming job refreshes the snapshot."
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the Prometheus metrics endpoint binds to (streaming job, monitor).",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on this port while the streaming job runs "
        "(default: none; `removal-audit monitor` serves a database's).",
    )
    alert_rules: Path | None = Field(
        default=None,
        description="Alert rules file (TOML) used instead of the packaged "
        "pipelines/data/alert_rules.toml.",
    )
    alerts_topic: str | None = Field(
        default="removal.alerts",
        description="Kafka topic (after the topic prefix) alert notifications are produced to "
        "by the streaming job, and by batch loads when kafka_alerts is set ('none': no topic).",
    )
    kafka_alerts: bool = Field(
        default=False,
        description="Batch loads also produce their alert notifications to the alerts topic.",
    )
    alert_webhook_url: SecretStr | None = Field(
        default=None,
        description="Alertmanager-compatible webhook receiver that alert notifications are "
        "POSTed to (its URL may carry a token, so it is masked when printed).",
    )
    alert_notify_history_days: int = Field(
        default=7,
        ge=0,
        description="An alert episode that had already ended more than this many days (event "
        "time) before the data reached the pipeline (a replay of history) is recorded in "
        "DuckDB but not notified.",
    )
    alert_webhook_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Timeout of one webhook POST."
    )
    alert_retry_max_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Longest wait between retries of an undelivered notification "
        "(exponential backoff from 1 s).",
    )
    auditor_memory_limit_mb: int = Field(
        default=2048,
        gt=0,
        description="Memory one auditor session (`sql`, `fingerprint`) may use; a query "
        "needing more spills to temporary files, then stops.",
    )
    auditor_temp_limit_mb: int = Field(
        default=4096,
        gt=0,
        description="Temporary disk space one auditor session may spill to (in a private "
        "directory of the system's temporary directory, removed afterwards).",
    )
    auditor_statement_timeout_seconds: float = Field(
        default=300.0, gt=0, description="An auditor's statement running longer is stopped."
    )
    prism_location: Path | None = Field(
        default=None,
        description="Prism runner binary (default: build or reuse the cached one, "
        "docker/prism/build.py).",
    )

    @property
    def snapshot_path(self) -> Path:
        if self.snapshot is not None:
            return self.snapshot
        return self.database.with_name(f"{self.database.stem}.snapshot.duckdb")

    @property
    def auditor_limits(self) -> AuditorLimits:
        # Imported here: DuckDB is not loaded by the commands that never query it.
        from connectors.duckdb_limits import AuditorLimits

        return AuditorLimits(
            memory_limit_mb=self.auditor_memory_limit_mb,
            temp_limit_mb=self.auditor_temp_limit_mb,
            statement_timeout_s=self.auditor_statement_timeout_seconds,
        )

    @property
    def snapshot_every_s(self) -> float:
        return self.snapshot_every_seconds

    @property
    def default_sla(self) -> timedelta:
        return timedelta(hours=self.default_sla_hours)

    @property
    def max_clock_skew(self) -> timedelta:
        return timedelta(seconds=self.max_clock_skew_seconds)
