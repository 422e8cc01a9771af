"""Seed scenarios: synthetic removal demands and answers that reproduce published figures.

In: a scenario file (TOML, e.g. `roskomnadzor_twitter_2021.toml`) stating published figures
with their sources, and the parameters of a synthetic history. Out (`generate`): two Avro
container files of raw Kafka messages, `requests.avro` (topic removal.requests) and
`actions.avro` (topic removal.actions), ordered by arrival time, with late, out-of-order and
duplicated deliveries, a few malformed messages, and a share of requests written with an
older schema version.

How the figures are met: every demand's fate is planned from the scenario's parameters;
the lifecycle function is run over the planned events of each content; then the answers
of chosen plain demands (one demand on its content, no episode) are moved across the
calibration instant until every "exactly" figure holds. Finally every figure is recomputed
from the events about to be written, and `CalibrationError` is raised if one is missed.
The malformed messages are made after that and are never part of the calibrated events.

Deterministic: one `random.Random(seed)` drives everything and the container files get a
sync marker derived from the seed, so the same seed gives byte-identical files.

Modules: `scenario_file` (figures and context), `params` (generation parameters),
`plan` and `events` (what is planned and the events it stands for), `calibrate`
(calibration and the figure check), `delivery` (messages and their arrival), `draws`
(random draws on whole milliseconds).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from connectors.avro_codec import encode_single_object
from connectors.avro_files import write_raw_messages
from connectors.schema_store import SchemaStore
from pipelines.model import UNRESOLVED
from pipelines.policy import SlaPolicy
from pipelines.scenarios.calibrate import Book, FigureCheck, calibrate, clean_up, evaluate_figures
from pipelines.scenarios.delivery import (
    ACTIONS_SUBJECT,
    REQUESTS_SUBJECT,
    Outbox,
    encode_request,
    message_key,
    post_malformed,
)
from pipelines.scenarios.events import World
from pipelines.scenarios.params import ACTIONS_TOPIC, REQUESTS_TOPIC, Params
from pipelines.scenarios.plan import (
    GAP,
    IdMaker,
    add_episodes,
    apply_slowdowns,
    plan_demands,
    request_names,
)
from pipelines.scenarios.scenario_file import (
    ALL_CATEGORIES,
    COMPARISONS,
    METRICS,
    SCENARIO_DIR,
    SCENARIOS,
    CalibrationError,
    ContextNote,
    PublishedFigure,
    Scenario,
    UnknownScenario,
    load_scenario,
    load_scenario_file,
)

# What this module offered before it was split; pipelines.report and pipelines.cli import
# from here.
__all__ = [
    "ACTIONS_FILE",
    "ACTIONS_SUBJECT",
    "ACTIONS_TOPIC",
    "ALL_CATEGORIES",
    "COMPARISONS",
    "METRICS",
    "REQUESTS_FILE",
    "REQUESTS_SUBJECT",
    "REQUESTS_TOPIC",
    "SCENARIOS",
    "SCENARIO_DIR",
    "CalibrationError",
    "ContextNote",
    "FigureCheck",
    "GeneratedScenario",
    "PublishedFigure",
    "Scenario",
    "UnknownScenario",
    "evaluate_figures",
    "generate",
    "load_scenario",
    "load_scenario_file",
]

REQUESTS_FILE = "requests.avro"
ACTIONS_FILE = "actions.avro"


@dataclass(frozen=True, slots=True)
class GeneratedScenario:
    """What `generate` wrote.

    `requests_messages` / `actions_messages`: messages in each file, every kind counted;
    `valid_requests` / `valid_actions`: well-formed events written (each once; request
    events include withdrawals); `duplicates`: extra deliveries of those, both files;
    `malformed`: malformed messages, both files; `adjusted`: demands whose planned answer
    calibration moved; `checks`: the published figures recomputed from the written events.
    """

    scenario: str
    seed: int
    requests_path: Path
    actions_path: Path
    requests_messages: int
    actions_messages: int
    valid_requests: int
    valid_actions: int
    duplicates: int
    malformed: int
    adjusted: int
    checks: tuple[FigureCheck, ...]


def generate(name: str, out_dir: Path, seed: int = 2021) -> GeneratedScenario:
    """Write the scenario `name`'s two Avro files of raw messages into `out_dir`.

    In: a scenario name from SCENARIOS, an output directory (created if missing), a seed.
    Out: the files' paths, counts of what they hold, and the published figures recomputed
    from the written well-formed events. Raises CalibrationError if a figure is missed.
    """
    scenario = load_scenario(name)
    params = Params.parse(scenario.raw, str(scenario.path))
    rng = random.Random(seed)
    new_id = IdMaker(rng)
    policy = SlaPolicy.load()
    store = SchemaStore.load()

    plans = plan_demands(params, rng, new_id)
    add_episodes(plans, params, rng, new_id)
    world = World(params.setting, request_names(plans))
    apply_slowdowns(plans, params.slowdowns, rng)
    book = Book(plans, world, policy)
    adjusted = calibrate(book, scenario.figures, params, rng)
    for cleanup in params.cleanups:
        clean_up(book, cleanup, params.setting.end, rng)

    requests, actions = book.events()
    checks = evaluate_figures(scenario.figures, requests, actions, policy)
    missed = [c for c in checks if not c.ok]
    if missed:
        raise CalibrationError(
            "; ".join(
                f"{c.figure.id}: computed {c.computed}, published {c.figure.comparison} "
                f"{c.figure.value}"
                for c in missed
            )
        )

    delivery = params.delivery
    request_box = Outbox(REQUESTS_TOPIC, delivery, rng)
    action_box = Outbox(ACTIONS_TOPIC, delivery, rng)
    platform = params.setting.platform
    for request in requests:
        payload = encode_request(request, store, rng, delivery.v1_share)
        arrival = request.event_time + delivery.lag(rng)
        request_box.post(
            message_key(platform, request.content_id), payload, arrival, may_repeat=True
        )
    for action in actions:
        payload = encode_single_object(action.to_avro(), ACTIONS_SUBJECT, store)
        arrival = action.event_time + delivery.lag(rng)
        action_box.post(message_key(platform, action.content_id), payload, arrival, may_repeat=True)
    duplicates = request_box.duplicates + action_box.duplicates

    instant = min((f.as_of for f in scenario.figures), default=params.setting.end)
    targets = [
        p
        for p in plans
        if p.plain
        and p.decline_at is None
        and p.withdraw_at is None
        and p.issued_at + GAP < instant
        and book.main_status(p, instant) in UNRESOLVED
    ]
    wanted = sum(
        params.malformed.get(ACTIONS_TOPIC, {}).get(kind, 0)
        for kind in ("timestamp_1970", "restricted_without_jurisdiction")
    )
    if len(targets) < wanted:
        raise CalibrationError(
            f"{len(targets)} unresolved demands to aim bad events at, {wanted} wanted"
        )
    targets = rng.sample(targets, wanted)
    malformed = 0
    for box, valid in ((request_box, requests), (action_box, actions)):
        malformed += post_malformed(
            box,
            params.malformed.get(box.topic, {}),
            valid,
            targets,
            world,
            instant,
            store,
            rng,
            new_id,
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    written: dict[str, int] = {}
    for box, file_name in ((request_box, REQUESTS_FILE), (action_box, ACTIONS_FILE)):
        path = out_dir / file_name
        # A fixed marker (fastavro would draw a random one) keeps the files byte-identical.
        sync_marker = random.Random(f"{name}/{seed}/{box.topic}").randbytes(16)
        written[box.topic] = write_raw_messages(path, box.ordered(), store, sync_marker=sync_marker)
        paths[box.topic] = path
    return GeneratedScenario(
        scenario=name,
        seed=seed,
        requests_path=paths[REQUESTS_TOPIC],
        actions_path=paths[ACTIONS_TOPIC],
        requests_messages=written[REQUESTS_TOPIC],
        actions_messages=written[ACTIONS_TOPIC],
        valid_requests=len(requests),
        valid_actions=len(actions),
        duplicates=duplicates,
        malformed=malformed,
        adjusted=adjusted,
        checks=checks,
    )
