"""pytest plugin: a real single-node Kafka broker (KRaft) for the whole test session.

Register it with ``pytest_plugins = ["tests.kafka_broker_fixture"]`` in the root conftest.py
or with ``-p tests.kafka_broker_fixture`` on the command line. The fixture is lazy: a session
that runs no test asking for ``kafka_bootstrap`` starts no broker.

``kafka_bootstrap`` is the broker's bootstrap string. When REMOVAL_AUDIT_KAFKA_BOOTSTRAP is
set (e.g. to ``127.0.0.1:19092`` after ``make kafka``) that broker is used as it is;
otherwise docker/kafka/broker.py starts one on a free ephemeral port in a temporary directory
(fetching the jars through Maven on first use) and stops it when the session ends.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BOOTSTRAP_ENV = "REMOVAL_AUDIT_KAFKA_BOOTSTRAP"
BROKER_SCRIPT = Path(__file__).resolve().parents[1] / "docker" / "kafka" / "broker.py"
_MODULE_NAME = "removal_audit_kafka_broker"
PORT_ATTEMPTS = 3


def load_broker_module() -> ModuleType:
    """docker/kafka/broker.py as a module (docker/ is no Python package on purpose)."""
    module = sys.modules.get(_MODULE_NAME)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, BROKER_SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {BROKER_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if given:
        yield given
        return
    broker_module = load_broker_module()
    for attempt in range(1, PORT_ATTEMPTS + 1):
        directory = tmp_path_factory.mktemp("kafka")
        broker = broker_module.KafkaBroker(directory, port=broker_module.free_port_pair())
        try:
            broker.start()
            break
        except broker_module.BrokerError as error:
            # Another process may take the free ports between the pick and the bind.
            if "already in use" in str(error) and attempt < PORT_ATTEMPTS:
                continue
            pytest.fail(f"could not start the Kafka test broker: {error}", pytrace=False)
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()
