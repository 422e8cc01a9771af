"""docker/prometheus: the scrape config and alerting rules pass promtool's checks and unit
tests, every alert has a firing and a quiet test case, and the rules ask only for metrics
the pipeline exports (pipelines.metrics.SAMPLE_NAMES).

promtool is found or installed by docker/prometheus/promtool.py (the same code as `make
promtool`); when it can be neither found nor installed these tests fail, never skip.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
PROMTOOL_SCRIPT = PROMETHEUS_DIR / "promtool.py"
RULES = PROMETHEUS_DIR / "rules.yml"
RULE_TESTS = sorted(PROMETHEUS_DIR.glob("rules_test*.yml"))
COMPOSE = ROOT / "docker" / "compose.yml"

# A metric name of the project as written in PromQL (an expression or a template's query).
METRIC_NAME = re.compile(r"\bremoval_audit_[a-z0-9_]+\b")
SEVERITIES = {"critical", "warning"}


def _load_promtool_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("removal_audit_promtool", PROMTOOL_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def promtool() -> Path:
    script = _load_promtool_script()
    try:
        path: Path = script.locate()
    except script.PromtoolUnavailable as e:
        pytest.fail(
            f"promtool is needed to test docker/prometheus and could not be found or "
            f"installed (`make promtool`):\n{e}",
            pytrace=False,
        )
    return path


def _promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # cwd: promtool resolves rule_files relative to the file naming them, and prints the
    # paths it was given; running from the directory keeps both short.
    return subprocess.run(
        [str(promtool), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _shown(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def test_check_config(promtool: Path) -> None:
    done = _promtool(promtool, "check", "config", "prometheus.yml")
    assert done.returncode == 0, _shown(done)
    # The config names rules.yml, so promtool checked it too.
    assert "1 rule files found" in done.stdout, _shown(done)


def test_check_rules(promtool: Path) -> None:
    done = _promtool(promtool, "check", "rules", "rules.yml")
    assert done.returncode == 0, _shown(done)
    assert f"{len(_alert_rules())} rules found" in done.stdout, _shown(done)


def test_rule_unit_tests(promtool: Path) -> None:
    assert "rules_test.yml" in [p.name for p in RULE_TESTS]
    done = _promtool(promtool, "test", "rules", *(p.name for p in RULE_TESTS))
    assert done.returncode == 0, _shown(done)
    assert done.stdout.count("SUCCESS") == len(RULE_TESTS), _shown(done)


def test_promtool_script_prints_only_the_path(promtool: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(PROMTOOL_SCRIPT), "--no-install"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, _shown(done)
    printed = Path(done.stdout.strip())
    assert done.stdout == f"{printed}\n"
    assert printed.is_file() and os.access(printed, os.X_OK)


def test_promtool_script_refuses_a_promtool_that_does_not_run(tmp_path: Path) -> None:
    env = {**os.environ, "PROMTOOL": str(tmp_path / "no-such-promtool")}
    done = subprocess.run(
        [sys.executable, str(PROMTOOL_SCRIPT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, _shown(done)
    assert done.stdout == ""
    assert "does not run" in done.stderr


def test_every_alert_fires_in_a_test_case_and_stays_quiet_in_another() -> None:
    alerts = {rule["alert"] for rule in _alert_rules()}
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        suite = _yaml(path)
        assert suite["rule_files"] == ["rules.yml"], path.name
        for group in suite["tests"]:
            for case in group.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert fires | quiet <= alerts, f"test cases for unknown alerts: {(fires | quiet) - alerts}"
    assert alerts - fires == set(), "alerts with no test case where they fire"
    assert alerts - quiet == set(), "alerts with no test case where they must not fire"


def test_firing_cases_spell_out_every_annotation() -> None:
    for path in RULE_TESTS:
        for group in _yaml(path)["tests"]:
            for case in group.get("alert_rule_test", []):
                for alert in case.get("exp_alerts") or []:
                    where = f"{path.name}: {case['alertname']} at {case['eval_time']}"
                    assert alert["exp_labels"]["severity"] in SEVERITIES, where
                    annotations = alert["exp_annotations"]
                    assert set(annotations) == {"summary", "description", "runbook"}, where


def test_alerts_carry_severity_summary_description_and_runbook() -> None:
    rules = _alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "RemovalAuditBacklogSpike",
        "RemovalAuditOverdueHigh",
        "RemovalAuditBreachRateHigh",
        "RemovalAuditNothingLanded",
        "RemovalAuditConsumerLagHigh",
        "RemovalAuditBatchHeld",
        "RemovalAuditQuarantineSurge",
        "RemovalAuditAlertNotificationsStuck",
        "RemovalAuditDown",
    }
    for rule in rules:
        name = rule["alert"]
        assert name.startswith("RemovalAudit"), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, name
        # The description gives the numbers or the target, through templating.
        assert "{{" in annotations["description"], name
        assert (
            "removal-audit" in annotations["runbook"]
            or "docker compose" in (annotations["runbook"])
        ), name


def _metric_names_in_rules() -> set[str]:
    names: set[str] = set()
    for rule in _alert_rules():
        # expr, and the queries templates run from the annotations.
        for text in [rule["expr"], *rule["annotations"].values()]:
            names.update(METRIC_NAME.findall(text))
    return names


def _metric_names_in_rule_tests() -> set[str]:
    names: set[str] = set()
    for path in RULE_TESTS:
        for group in _yaml(path)["tests"]:
            for series in group.get("input_series", []):
                names.update(METRIC_NAME.findall(series["series"].split("{", 1)[0]))
    return names


def test_rules_use_only_metrics_the_pipeline_exports() -> None:
    from pipelines.metrics import SAMPLE_NAMES

    used = _metric_names_in_rules()
    assert len(used) >= 10, sorted(used)  # the regex found the rules' metrics at all
    assert used - SAMPLE_NAMES == set(), "rules.yml names metrics pipelines/metrics.py lacks"
    fed = _metric_names_in_rule_tests()
    assert fed - SAMPLE_NAMES == set(), "rule tests feed metrics pipelines/metrics.py lacks"
    assert used <= fed, f"metrics of rules.yml no rule test feeds: {sorted(used - fed)}"


def test_scrape_config_targets_a_compose_service_that_runs_these_rules() -> None:
    config = _yaml(PROMETHEUS_DIR / "prometheus.yml")
    assert config["rule_files"] == ["rules.yml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "removal-audit"]
    assert config["global"]["scrape_interval"] == "15s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    services = _yaml(COMPOSE)["services"]
    for target in targets:
        host, _, port = target.rpartition(":")
        assert host in services, f"{target}: no compose service {host!r}"
        assert port.isdigit(), target
    prometheus = services["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
