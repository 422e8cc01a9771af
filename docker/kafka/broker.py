#!/usr/bin/env python3
"""A real single-node Apache Kafka broker (KRaft, combined broker+controller) without Docker.

The broker's jars come from Maven Central through ``mvn`` (see ``pom.xml`` beside this file)
and are cached under ``${XDG_CACHE_HOME:-~/.cache}/removal-audit/kafka/<version>/libs``; the
broker runs as ``java -cp <jars> kafka.Kafka server.properties``. Everything binds to
127.0.0.1 only. Needs only the toolchains: Java 17+ and Maven 3.8+ on PATH.

As a script (the Makefile's ``make kafka`` / ``make kafka-stop``)::

    python docker/kafka/broker.py fetch                       # only fill the jar cache
    python docker/kafka/broker.py start  [--port 19092] [--dir .kafka]
    python docker/kafka/broker.py status [--port 19092] [--dir .kafka]
    python docker/kafka/broker.py stop   [--dir .kafka]

``start`` leaves the broker running in the background (own process group, pid in
``DIR/broker.pid``, log in ``DIR/broker.log``) and returns once a Kafka admin client can list
topics. Starting again on a formatted DIR keeps its topics.

As a module (tests)::

    with KafkaBroker(tmp_dir, port=free_port_pair()) as broker:
        use(broker.bootstrap_servers)   # "127.0.0.1:<port>"

Standard library only; the readiness probe uses kafka-python when it is importable and falls
back to a raw ApiVersions request otherwise.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
DEFAULT_PORT = 19092
DEFAULT_DIR = ".kafka"
DEFAULT_HEAP = "512m"
DEFAULT_START_TIMEOUT = 60.0
POM = Path(__file__).resolve().with_name("pom.xml")
STAMP_NAME = ".complete"
PID_NAME = "broker.pid"
CDS_PENDING_NAME = "cds-pending"
LOG_NAME = "broker.log"
MAIN_CLASS = "kafka.Kafka"
# Kafka 3.x and 4.x ship the Scala StorageTool in core; later versions may move it to tools.
STORAGE_TOOL_CLASSES = ("kafka.tools.StorageTool", "org.apache.kafka.tools.StorageTool")


class BrokerError(RuntimeError):
    """The jars could not be fetched, or the broker did not start or stop."""


# --------------------------------------------------------------------------- jar cache


def kafka_version(pom: Path = POM) -> str:
    """The ``kafka.version`` property of pom.xml: the single source of the version."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{pom} has no <kafka.version> property")
    return (node.text or "").strip()


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "removal-audit" / "kafka"


def libs_dir(version: str | None = None) -> Path:
    return cache_root() / (version or kafka_version()) / "libs"


def _pom_digest(pom: Path = POM) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def _cache_complete(libs: Path, digest: str) -> bool:
    """True when ``libs`` was filled from this very pom.xml and every jar is still there."""
    stamp = libs / STAMP_NAME
    try:
        lines = stamp.read_text().splitlines()
    except OSError:
        return False
    if not lines or lines[0] != f"pom-sha256 {digest}":
        return False
    jars = lines[1:]
    return bool(jars) and all((libs / name).is_file() for name in jars)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so parallel sessions fetch the cache only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, the atomic rename below still holds
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_jars(*, quiet: bool = True) -> Path:
    """Fetch the broker's runtime classpath into the cache (once) and return its directory.

    Skips Maven entirely when the cache holds a complete copy made from the current pom.xml.
    Maven's own downloads are cached in ~/.m2 as usual.
    """
    version = kafka_version()
    digest = _pom_digest()
    libs = libs_dir(version)
    if _cache_complete(libs, digest):
        return libs
    with _file_lock(libs.parent / ".lock"):
        if _cache_complete(libs, digest):  # another process filled it while we waited
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is not on PATH: it is needed once to fetch Kafka")
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
        command = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        if not quiet:
            print(f"fetching Apache Kafka {version} jars with Maven into {libs}", file=sys.stderr)
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            output = (result.stdout + result.stderr).strip().splitlines()
            raise BrokerError(
                f"mvn failed ({result.returncode}) fetching Kafka {version}:\n"
                + "\n".join(output[-40:])
            )
        jars = sorted(p.name for p in staging.glob("*.jar"))
        if not any(name.startswith(f"kafka_2.13-{version}") for name in jars):
            shutil.rmtree(staging, ignore_errors=True)
            raise BrokerError(f"mvn copied no kafka_2.13-{version} jar into {staging}")
        (staging / STAMP_NAME).write_text("\n".join([f"pom-sha256 {digest}", *jars]) + "\n")
        staging.chmod(0o755)  # mkdtemp made it private
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
        if not quiet:
            print(
                f"fetched {len(jars)} jars in {time.monotonic() - started:.1f} s", file=sys.stderr
            )
    return libs


def classpath(libs: Path) -> str:
    return str(libs / "*")  # the JVM expands a trailing '*' to every jar in the directory


def _find_class(libs: Path, candidates: tuple[str, ...]) -> str:
    import zipfile

    entries: set[str] = set()
    for jar in libs.glob("*.jar"):
        with zipfile.ZipFile(jar) as archive:
            entries.update(archive.namelist())
    for name in candidates:
        if name.replace(".", "/") + ".class" in entries:
            return name
    raise BrokerError(f"none of {candidates} is in the jars under {libs}")


# --------------------------------------------------------------------------- helpers


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError("java is not on PATH (Kafka 4 needs Java 17 or newer)")
    return found


def random_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in Kafka's URL-safe base64 form (22 characters).

    Never starting with "-", as Kafka's own Uuid.randomUuid() ensures: the storage tool's
    argument parser would take "-abc..." for an option (1 in 64 ids)."""
    while True:
        found = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not found.startswith("-"):
            return found


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_pair(host: str = HOST, attempts: int = 50) -> int:
    """An ephemeral port P such that P (client) and P+1 (controller) are both free now."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port < 65535 and port_is_free(port + 1, host):
            return port
    raise BrokerError("found no two adjacent free ports on 127.0.0.1")


def accepts_connections(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _api_versions_probe(port: int, host: str = HOST, timeout: float = 2.0) -> None:
    """Fallback readiness probe without kafka-python: ApiVersions v0 must answer error 0."""
    client_id = b"removal-audit-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        header = b""
        while len(header) < 10:
            chunk = sock.recv(10 - len(header))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            header += chunk
    _size, correlation_id, error_code = struct.unpack(">iih", header)
    if correlation_id != 1 or error_code != 0:
        raise ConnectionError(f"ApiVersions answered error {error_code}")


def probe(bootstrap: str, timeout: float = 5.0) -> list[str] | None:
    """Check that a Kafka client can talk to the broker.

    Returns the topic list (kafka-python's admin client), or None when kafka-python is not
    installed and the raw ApiVersions probe succeeded. Raises on failure.
    """
    try:
        from kafka import KafkaAdminClient
    except ImportError:
        host, _, port = bootstrap.rpartition(":")
        _api_versions_probe(int(port), host, timeout)
        return None
    timeout_ms = int(timeout * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="removal-audit-probe",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )
    try:
        return sorted(admin.list_topics())
    finally:
        admin.close()


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:]) or "(log is empty)"


def _pid_is_broker(pid: int) -> bool:
    """True if ``pid`` is alive and (where /proc tells) is a Kafka JVM."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return MAIN_CLASS.encode() in args
    return True


def _read_pid(directory: Path) -> int | None:
    try:
        return int((directory / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None


def configured_port(directory: Path) -> int | None:
    """The client port a previous start wrote into ``directory``/server.properties."""
    try:
        text = (directory / "server.properties").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("advertised.listeners="):
            with contextlib.suppress(ValueError):
                return int(line.rsplit(":", 1)[1])
    return None


def _terminate_group(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> bool:
    """SIGTERM the broker's process group, wait up to ``timeout``, then SIGKILL it.

    Returns True when the broker ended on SIGTERM alone (or was gone already).
    """

    def alive() -> bool:
        if proc is not None:
            return proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie is dead for our purpose; /proc tells where there is one.
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return True

    def signal_group(sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)  # the broker leads its own process group (start_new_session)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    if not alive():
        return True
    signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    clean = not alive()
    if not clean:
        signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
    return clean


# --------------------------------------------------------------------------- JVM options

# C1 only: the broker is ready in about half the time on 2 cores; peak throughput, which a
# test or local broker never needs, is lower. REMOVAL_AUDIT_KAFKA_JVM_OPTS adds options.
# log4j2's own shutdown hook is off so the broker's shutdown is logged to the end.
JVM_OPTS = (
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-Djava.awt.headless=true",
    "-Dlog4j2.shutdownHookEnabled=false",
)


def _extra_jvm_opts() -> list[str]:
    return os.environ.get("REMOVAL_AUDIT_KAFKA_JVM_OPTS", "").split()


def cds_archive(java: str, libs: Path) -> Path | None:
    """Where this JVM's class-data-sharing archive for the broker's classpath lives.

    The first broker started dumps the classes it loaded there when it stops
    (-XX:ArchiveClassesAtExit); later starts map them (-XX:SharedArchiveFile), which cuts
    JVM start-up by seconds. Keyed by the exact JVM build and the jar set; a stale or broken
    archive is only ever ignored by the JVM. REMOVAL_AUDIT_KAFKA_CDS=0 turns this off.
    """
    if os.environ.get("REMOVAL_AUDIT_KAFKA_CDS", "1") in ("0", "false", "no", "off"):
        return None
    try:
        version = subprocess.run(
            [java, "-Xshare:auto", "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    key = hashlib.sha256(
        "\n".join([os.path.realpath(java), version, (libs / STAMP_NAME).read_text()]).encode()
    ).hexdigest()[:16]
    return libs.parent / "cds" / f"broker-{key}.jsa"


def _jvm_cds_opts(archive: Path | None, pending: Path | None) -> list[str]:
    if archive is not None and archive.is_file():
        return [f"-XX:SharedArchiveFile={archive}"]
    if pending is not None:
        return [f"-XX:ArchiveClassesAtExit={pending}"]
    return []


# --------------------------------------------------------------------------- the broker


LOG4J2_PROPERTIES = """\
# Written by docker/kafka/broker.py: everything at INFO to the console, which the broker's
# stdout carries to broker.log.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${sys:removal.audit.kafka.log.level:-info}
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


class KafkaBroker:
    """One KRaft broker+controller on 127.0.0.1:``port`` (controller on ``port + 1``).

    Data, config and log live under ``directory``. ``start()`` blocks until a client can list
    topics; ``stop()`` terminates it (SIGTERM, then SIGKILL). A context manager. With
    ``detach=True`` the broker outlives this Python process (``broker.py start``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        port: int = DEFAULT_PORT,
        *,
        heap: str = DEFAULT_HEAP,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = 30.0,
        detach: bool = False,
    ) -> None:
        if not 0 < port < 65535:
            raise ValueError(f"port must leave room for the controller on port+1: {port}")
        self.directory = Path(directory).resolve()
        self.port = port
        self.controller_port = port + 1
        self.heap = heap
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.detach = detach
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.start_seconds: float | None = None

    # -- public API

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_NAME

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        pid = _read_pid(self.directory)
        return pid is not None and _pid_is_broker(pid)

    def start(self) -> KafkaBroker:
        started = time.monotonic()
        if self.is_running():
            raise BrokerError(
                f"a broker already runs from {self.directory} (pid {_read_pid(self.directory)})"
            )
        for port in (self.port, self.controller_port):
            if not port_is_free(port):
                raise BrokerError(f"port {HOST}:{port} is already in use")
        libs = ensure_jars()
        java = java_executable()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_config()
        archive = cds_archive(java, libs)
        self._format_storage(java, libs, archive)

        pending: Path | None = None
        if archive is not None and not archive.is_file():
            archive.parent.mkdir(parents=True, exist_ok=True)
            pending = archive.with_name(f"{archive.name}.{os.getpid()}-{time.time_ns()}.tmp")
            (self.directory / CDS_PENDING_NAME).write_text(f"{pending}\n{archive}\n")
        command = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            *JVM_OPTS,
            *_jvm_cds_opts(archive, pending),
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.directory / 'logs'}",
            *_extra_jvm_opts(),
            "-cp",
            classpath(libs),
            MAIN_CLASS,
            str(self.config_path),
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                command,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the whole group
            )
        self.pid = self._proc.pid
        (self.directory / PID_NAME).write_text(f"{self.pid}\n")
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        if self.detach:
            # The JVM runs on in its own session; forget it so no ResourceWarning is raised.
            self._proc.returncode = 0
            self._proc = None
        return self

    def stop(self) -> None:
        pid = self.pid if self._proc is not None else _read_pid(self.directory)
        clean = False
        if pid is not None and (self._proc is not None or _pid_is_broker(pid)):
            clean = _terminate_group(pid, self.stop_timeout, self._proc)
        self._proc = None
        self.pid = None
        with contextlib.suppress(FileNotFoundError):
            (self.directory / PID_NAME).unlink()
        self._settle_cds_archive(promote=clean)

    def _settle_cds_archive(self, *, promote: bool) -> None:
        """Keep the class archive a cleanly stopped broker dumped; drop a partial one."""
        marker = self.directory / CDS_PENDING_NAME
        try:
            pending, archive = (Path(line) for line in marker.read_text().splitlines()[:2])
        except (OSError, ValueError):
            return
        marker.unlink()
        if promote and pending.is_file() and pending.stat().st_size > 0 and not archive.exists():
            os.replace(pending, archive)
        else:
            with contextlib.suppress(FileNotFoundError):
                pending.unlink()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals

    def server_properties(self) -> dict[str, str]:
        data = self.directory / "data"
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            # One broker: every internal topic has one replica. Fewer offsets partitions than
            # the default 50 make the first consumer group's coordinator ready sooner.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "168",
            "delete.topic.enable": "true",
        }

    def _write_config(self) -> None:
        lines = ["# Written by docker/kafka/broker.py; rewritten on every start."]
        lines += [f"{key}={value}" for key, value in self.server_properties().items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        (self.directory / "log4j2.properties").write_text(LOG4J2_PROPERTIES)

    def _format_storage(self, java: str, libs: Path, archive: Path | None) -> None:
        if (self.directory / "data" / "meta.properties").exists():
            return  # formatted before: keep its cluster id and topics
        cluster_id = random_cluster_id()
        tool = _find_class(libs, STORAGE_TOOL_CLASSES)
        command = [
            java,
            "-Xmx256m",
            *JVM_OPTS,
            *_jvm_cds_opts(archive, None),
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            "-Dremoval.audit.kafka.log.level=warn",
            "-cp",
            classpath(libs),
            tool,
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.config_path),
            "--ignore-formatted",
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=120, cwd=self.directory
        )
        with open(self.log_path, "a") as log:
            log.write(f"===== format (cluster id {cluster_id})\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            raise BrokerError(
                f"{tool} format failed ({result.returncode}):\n{_log_tail(self.log_path)}"
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(
                    f"the Kafka broker exited with code {code} while starting; "
                    f"last lines of {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            if accepts_connections(self.port):
                try:
                    probe(self.bootstrap_servers, timeout=min(5.0, self.start_timeout))
                    return
                except Exception as error:  # not ready yet: keep polling
                    last_error = error
            time.sleep(0.25)
        raise BrokerError(
            f"the Kafka broker on {self.bootstrap_servers} was not ready after "
            f"{self.start_timeout:g} s (last probe error: {last_error!r}); "
            f"last lines of {self.log_path}:\n{_log_tail(self.log_path)}"
        )


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a single-node Apache Kafka broker (KRaft) from Maven Central jars."
    )
    parser.add_argument("command", choices=["start", "stop", "status", "fetch"])
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"client port (start: default {DEFAULT_PORT}; status: the one DIR was started "
        "with); the controller uses port+1",
    )
    parser.add_argument(
        "--dir", default=DEFAULT_DIR, help="data, config and log directory (default %(default)s)"
    )
    parser.add_argument("--heap", default=DEFAULT_HEAP, help="JVM heap (default %(default)s)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT,
        help="seconds to wait for the broker to answer (default %(default)s)",
    )
    args = parser.parse_args(argv)
    port = args.port
    if port is None:
        port = DEFAULT_PORT
        if args.command == "status":
            port = configured_port(Path(args.dir)) or DEFAULT_PORT

    try:
        if args.command == "fetch":
            libs = ensure_jars(quiet=False)
            print(f"Kafka {kafka_version()} jars: {libs}")
            return 0
        broker = KafkaBroker(
            args.dir, port, heap=args.heap, start_timeout=args.timeout, detach=True
        )
        if args.command == "start":
            if broker.is_running():
                running_port = configured_port(broker.directory) or port
                if running_port != port:
                    raise BrokerError(
                        f"a broker already runs from {broker.directory} on port {running_port}"
                    )
                try:
                    probe(broker.bootstrap_servers)
                except Exception as error:
                    raise BrokerError(
                        f"a broker process runs from {broker.directory} but "
                        f"{broker.bootstrap_servers} does not answer ({error!r}); "
                        f"see {broker.log_path}"
                    ) from error
                print(
                    f"Kafka already running at {broker.bootstrap_servers} "
                    f"(pid {_read_pid(broker.directory)}, dir {broker.directory})"
                )
                return 0
            ensure_jars(quiet=False)
            broker.start()
            print(
                f"Kafka {kafka_version()} ready at {broker.bootstrap_servers} in "
                f"{broker.start_seconds:.1f} s (pid {broker.pid}, log {broker.log_path}); "
                f"stop with: python docker/kafka/broker.py stop --dir {args.dir}"
            )
            return 0
        if args.command == "stop":
            pid = _read_pid(broker.directory)
            if pid is None or not _pid_is_broker(pid):
                print(f"no Kafka broker running from {broker.directory}")
                broker.stop()  # clears a stale pid file
                return 0
            broker.stop()
            print(f"stopped Kafka broker (pid {pid})")
            return 0
        # status
        pid = _read_pid(broker.directory)
        if pid is None or not _pid_is_broker(pid):
            print(f"not running (dir {broker.directory})")
            return 1
        try:
            topics = probe(broker.bootstrap_servers)
        except Exception as error:
            print(f"pid {pid} alive but {broker.bootstrap_servers} does not answer: {error!r}")
            return 1
        shown = "?" if topics is None else str(len(topics))
        print(f"running at {broker.bootstrap_servers} (pid {pid}, {shown} topics)")
        return 0
    except BrokerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno == errno.ENOENT:
            print(f"error: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
