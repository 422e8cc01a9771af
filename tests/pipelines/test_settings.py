"""The settings object: environment in, credentials masked, Kafka options passed through."""

from __future__ import annotations

import pytest

from connectors.kafka_source import source_settings
from pipelines.settings import Settings


def test_kafka_credentials_are_masked_and_passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOVAL_AUDIT_KAFKA_BOOTSTRAP_SERVERS", "broker-1:9093")
    monkeypatch.setenv("REMOVAL_AUDIT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("REMOVAL_AUDIT_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("REMOVAL_AUDIT_KAFKA_SASL_USERNAME", "auditor")
    monkeypatch.setenv("REMOVAL_AUDIT_KAFKA_SASL_PASSWORD", "s3cret-value")
    monkeypatch.setenv("REMOVAL_AUDIT_MAX_OUT_OF_ORDERNESS_SECONDS", "120")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in str(settings)

    source = source_settings(settings, stop_at_end=True)
    assert "s3cret-value" not in repr(source)
    config = source.consumer_config()
    assert config["bootstrap_servers"] == "broker-1:9093"
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "auditor"
    assert config["sasl_plain_password"] == "s3cret-value"
    assert "ssl_cafile" not in config  # unset options keep kafka-python's defaults
    assert source.max_out_of_orderness_s == 120 and source.stop_at_end


def test_blank_values_from_example_env_mean_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOVAL_AUDIT_DEFAULT_SLA_HOURS", "")
    monkeypatch.setenv("REMOVAL_AUDIT_KAFKA_SASL_PASSWORD", "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.default_sla_hours == 24.0 and settings.kafka_sasl_password is None
