"""In-memory interactions, request validation for create, and the counters behind /_emulator/stats."""

from __future__ import annotations

import base64
import hashlib
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from . import threads
from .agent_config import AgentConfig, AgentConfigError, parse_agent_config
from .content import Charts
from .directives import Directive, DirectiveError, parse_directive
from .faults import FaultInjector
from .inputs import InputError, ParsedInput, parse_input
from .lifecycle import Interaction
from .settings import AGENTS, ENDPOINTS, OUTCOMES, EmulatorSettings, FaultMap


class ApiError(Exception):
    """An error answered with the API's body shape `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


@dataclass(slots=True)
class CreateRequest:
    agent: str | None
    model: str | None
    text: str
    parsed: ParsedInput
    raw_input: Any
    agent_config: dict[str, Any] | None
    config: AgentConfig
    labels: dict[str, str] | None
    previous_interaction_id: str | None
    stream: bool


def parse_create(body: Any) -> CreateRequest:
    """Validate a create body the way the API does; raise ApiError(400) on any problem."""
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    agent, model = body.get("agent"), body.get("model")
    if agent and model:
        raise bad_request("`model` and `agent` are mutually exclusive; set exactly one")
    if not agent and not model:
        raise bad_request("one of `model` or `agent` is required")
    if agent and agent not in AGENTS:
        raise bad_request(f"unknown agent {agent!r}; supported agents: {', '.join(AGENTS)}")
    if model and not (isinstance(model, str) and model.startswith("gemini-")):
        raise bad_request(f"unknown model {model!r}")
    background = body.get("background")
    if background and body.get("store") is False:
        raise bad_request("`store=false` is not supported with `background=true`")
    if agent and background is not True:
        raise bad_request("agent interactions require `background=true`")
    raw_input = body.get("input")
    try:
        parsed = parse_input(raw_input)
    except InputError as exc:
        raise bad_request(str(exc)) from None
    previous = body.get("previous_interaction_id")
    if previous is not None and not isinstance(previous, str):
        raise bad_request("`previous_interaction_id` must be a string")
    return CreateRequest(
        agent=agent,
        model=model,
        text=parsed.text,
        parsed=parsed,
        raw_input=raw_input,
        agent_config=body.get("agent_config"),
        config=_agent_config(body.get("agent_config"), agent),
        labels=_labels(body.get("labels")),
        previous_interaction_id=body.get("previous_interaction_id") or None,
        stream=body.get("stream") is True,
    )


def _agent_config(value: Any, agent: str | None) -> AgentConfig:
    if agent is None:
        if value is not None:
            # The SDK's CreateModelInteraction has no agent_config field: it belongs to agents only.
            raise bad_request("`agent_config` is only valid together with `agent`")
        return AgentConfig()
    try:
        return parse_agent_config(value)
    except AgentConfigError as exc:
        raise bad_request(str(exc)) from None


def _labels(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise bad_request("`labels` must map strings to strings")
    return dict(value)


def _charts(config: AgentConfig, directive: Directive | None) -> Charts:
    """One chart by default with `visualization: "auto"` (its documented default), none with "off"."""
    if not config.visualization:
        return Charts()
    count = directive.charts if directive and directive.charts is not None else 1
    return Charts(count=count, broken=directive.chart if directive else None)


class Store:
    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        # Bumped by every reset so ids stay unique for the life of the process.
        self.epoch = 0
        # Real ids are unique across the service: two emulators (or one restarted) with the same seed must
        # not hand out the same id, so ids mix in a per-process random part. Content stays seeded.
        self.instance = uuid.uuid4().hex
        self.injector = FaultInjector(settings.seed, settings.faults)
        self.reset()

    def reset(self) -> None:
        self.epoch += 1
        self.items: dict[str, Interaction] = {}
        self.ordinal = 0
        self.creates_by_input: Counter[str] = Counter()
        self.requests: dict[str, Counter[str]] = {name: Counter() for name in ENDPOINTS}
        self.faults_injected: Counter[str] = Counter()
        self.injector.reset(dict(self.settings.faults))

    def set_faults(self, faults: FaultMap) -> None:
        # Only the rates change: the per-endpoint random streams keep their position.
        self.injector.faults = faults

    def count(self, endpoint: str, status: int | str) -> None:
        self.requests[endpoint][str(status)] += 1

    def _new_id(self) -> str:
        digest = hashlib.sha256(f"{self.instance}:{self.settings.seed}:{self.epoch}:{self.ordinal}".encode()).digest()
        return "v1_" + base64.urlsafe_b64encode(digest[:30]).decode().rstrip("=")

    def create(self, req: CreateRequest) -> Interaction:
        try:
            directive, question = parse_directive(req.text)
        except DirectiveError as exc:
            raise bad_request(str(exc)) from None
        now = time.monotonic()
        previous = self._previous(req.previous_interaction_id, now)
        # Image- or document-only input: the attachments are the question.
        question = question or "Analyse the attached material"
        mode, thread = threads.decide(
            previous.thread_after(previous.elapsed(now)) if previous else None,
            question,
            planning=req.config.collaborative_planning,
            is_model=req.model is not None,
        )
        it = self._build(req, directive, question, now)
        it.mode, it.thread, it.attachments = mode, thread, tuple(req.parsed.attachments)
        it.input_blocks = req.parsed.blocks
        self.items[it.id] = it
        self.creates_by_input[req.raw_input if isinstance(req.raw_input, str) else req.text] += 1
        return it

    def _previous(self, interaction_id: str | None, now: float) -> Interaction | None:
        """The turn a continuation builds on. Unknown or gone: 404 not_found (the docs name no other error);
        still running: 400, since it has no output to continue from yet (the docs are silent; our choice)."""
        if interaction_id is None:
            return None
        try:
            previous = self.lookup(interaction_id, now)
        except ApiError:
            raise ApiError(404, "not_found", f"previous_interaction_id {interaction_id!r} was not found") from None
        t = previous.elapsed(now)
        if not previous.is_terminal_at(t):
            status = previous.status_at(t)
            raise bad_request(f"previous interaction {interaction_id!r} is still {status}; continue it once it ended")
        return previous

    def _build(self, req: CreateRequest, directive: Directive | None, question: str, now: float) -> Interaction:
        self.ordinal += 1
        seed = f"{self.settings.seed}:interaction:{self.ordinal}"
        rng = random.Random(seed)
        # Always draw both values so a directive on one interaction never shifts the others.
        drawn_outcome = self._draw_outcome(rng.random())
        drawn_duration = rng.uniform(self.settings.duration_min, self.settings.duration_max)
        if req.model:
            drawn_outcome, drawn_duration = "completed", 0.0
        it = Interaction(
            id=self._new_id(),
            ordinal=self.ordinal,
            agent=req.agent,
            model=req.model,
            input_text=req.text,
            question=question,
            raw_input=req.raw_input,
            outcome=(directive.outcome if directive and directive.outcome else drawn_outcome),
            duration=(directive.duration if directive and directive.duration is not None else drawn_duration),
            seed=seed,
            thought_steps=self.settings.thought_steps,
            created_mono=now,
            created_wall=time.time(),
            agent_config=req.agent_config,
            config=req.config,
            charts=_charts(req.config, directive),
            labels=req.labels,
            previous_interaction_id=req.previous_interaction_id,
        )
        return it

    def _draw_outcome(self, u: float) -> str:
        cumulative = 0.0
        for outcome in OUTCOMES:
            cumulative += self.settings.outcome_rates.get(outcome, 0.0)
            if u < cumulative:
                return outcome
        return "completed"

    def lookup(self, interaction_id: str, now: float) -> Interaction:
        it = self.items.get(interaction_id)
        if it is None or it.gone_at(it.elapsed(now), self.settings.retention):
            raise ApiError(404, "not_found", f"interaction {interaction_id!r} was not found")
        return it

    def stats(self, now: float) -> dict[str, Any]:
        status_counts: Counter[str] = Counter()
        for key, it in list(self.items.items()):
            t = it.elapsed(now)
            if it.gone_at(t, self.settings.retention):
                # Forget gone interactions for good; every lookup already answers 404 for them.
                del self.items[key]
                continue
            status_counts[it.status_at(t)] += 1
        return {
            "interactions_created": self.ordinal,
            "live_interactions": sum(status_counts.values()),
            "creates_by_input": dict(self.creates_by_input),
            "status_counts": dict(status_counts),
            "requests": {name: dict(codes) for name, codes in self.requests.items()},
            "faults_injected": dict(self.faults_injected),
            "faults": self.injector.faults,
            "seed": self.settings.seed,
        }
