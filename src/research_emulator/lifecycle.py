"""One emulated interaction, whose state is derived from the clock at request time.

Nothing runs in the background: status, visible steps and due stream events are all pure functions of
"seconds since creation" plus the outcome drawn at creation and an optional cancellation time. Idle
interactions therefore cost only their memory, and the JSON of an ended interaction is cached.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any

from . import content as content_mod
from . import threads
from .agent_config import AgentConfig
from .inputs import Attachment

# A status no client knows yet, as a newer API might report; it does not end the interaction.
UNKNOWN_STATUS = "paused"
# Outcome (as drawn or requested) -> the status the interaction ends in; `stuck` never ends.
FINAL_STATUS = {
    "completed": "completed",
    "expired": "completed",
    "failed": "failed",
    "incomplete": "incomplete",
    "budget_exceeded": "budget_exceeded",
    "requires_action": "requires_action",
    "unknown_status": UNKNOWN_STATUS,
}
TERMINAL_STATUSES = frozenset({*FINAL_STATUS.values(), "cancelled"} - {UNKNOWN_STATUS})


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(slots=True)
class TimedStep:
    due: float
    step: dict[str, Any]


@dataclass(slots=True)
class Interaction:
    id: str
    ordinal: int
    agent: str | None
    model: str | None
    # The input text as sent (echoed in the user_input step) and without the directive (used for content).
    input_text: str
    question: str
    raw_input: Any
    outcome: str
    duration: float
    seed: str
    thought_steps: int
    created_mono: float
    created_wall: float
    # As sent (echoed in the resource), and what it means for the content.
    agent_config: dict[str, Any] | None = None
    config: AgentConfig = field(default_factory=AgentConfig)
    charts: content_mod.Charts = field(default_factory=content_mod.Charts)
    # Multi-turn: what this turn does (threads.Mode) and what it knows from earlier turns.
    mode: threads.Mode = "research"
    thread: threads.Thread | None = None
    attachments: tuple[Attachment, ...] = ()
    input_blocks: list[dict[str, Any]] | None = None
    labels: dict[str, str] | None = None
    previous_interaction_id: str | None = None
    # Seconds after creation at which a cancel arrived, if one did before the natural end.
    cancelled_at: float | None = None
    deleted: bool = False
    _steps: list[TimedStep] | None = field(default=None, repr=False)
    _content: content_mod.Content | None = field(default=None, repr=False)
    _json_cache: tuple[tuple[str, int, bool], bytes] | None = field(default=None, repr=False)
    events_cache: tuple[float | None, list[tuple[float, bytes]]] | None = field(default=None, repr=False)

    # ---- time and status -------------------------------------------------------------------
    @property
    def queued_for(self) -> float:
        # A short queued phase so clients see both running statuses.
        return min(0.5, 0.1 * self.duration)

    def elapsed(self, now: float) -> float:
        return now - self.created_mono

    def end(self) -> tuple[float | None, str | None]:
        """(seconds after creation when it ends, final status); (None, None) while it never ends."""
        natural = None if self.outcome == "stuck" else self.duration
        if self.cancelled_at is not None and (
            natural is None or self.outcome == "unknown_status" or self.cancelled_at < natural
        ):
            return self.cancelled_at, "cancelled"
        if natural is None:
            return None, None
        return natural, FINAL_STATUS[self.outcome]

    def status_at(self, t: float) -> str:
        end, final = self.end()
        if end is not None and final is not None and t >= end:
            return final
        return "queued" if t < self.queued_for else "in_progress"

    def is_terminal_at(self, t: float) -> bool:
        return self.status_at(t) in TERMINAL_STATUSES

    def gone_at(self, t: float, retention: float) -> bool:
        """Deleted, or an `expired` interaction whose retention time has passed."""
        if self.deleted:
            return True
        end, _ = self.end()
        return self.outcome == "expired" and end is not None and t >= end + retention

    # ---- content ---------------------------------------------------------------------------
    @property
    def content(self) -> content_mod.Content:
        if self._content is None:
            thread = self.thread or threads.Thread(question=self.question)
            # Planning and executing a plan work on the thread's question, not on "looks good!".
            question = thread.question if self.mode in ("plan", "execute") else self.question
            extra = threads.report_extra(self.mode, thread, content_mod.title_from(question))
            if self.attachments:
                extra = replace(extra, sections=(self._material_section(), *extra.sections))
            self._content = content_mod.generate(
                question, random.Random(self.seed + ":content"), self.thought_steps, self.charts, extra
            )
        return self._content

    def _material_section(self) -> str:
        """Every attached image and document, named (uri file name or PDF title) or described."""
        lines = "".join(f"- {a.describe()}: read and used for this report.\n" for a in self.attachments)
        return f"## Provided material\n\n{lines}\n"

    def plan_steps(self) -> tuple[str, ...]:
        thread = self.thread or threads.Thread(question=self.question)
        return threads.plan_steps(self.content.topic, thread.changes)

    def thread_after(self, t: float) -> threads.Thread:
        """What a turn continuing this one knows: its plan, its report, or its answer (if it completed)."""
        thread = self.thread or threads.Thread(question=self.question)
        if self.status_at(t) != "completed":
            return thread
        if self.model:
            return threads.after_answer(thread, self.question)
        if self.mode == "plan":
            return threads.after_plan(thread, self.plan_steps())
        return threads.after_report(thread, self.content.title, self.content.sources, self.question, self.mode)

    def steps(self) -> list[TimedStep]:
        """Every step this interaction will show if it runs to its natural end, with due times."""
        if self._steps is None:
            self._steps = self._model_steps() if self.model else self._agent_steps()
        return self._steps

    def _user_step(self) -> TimedStep:
        # The input as sent, text and attachments alike (SDK UserInputStep.content: list of Content).
        blocks = self.input_blocks or [{"type": "text", "text": self.input_text}]
        return TimedStep(0.0, {"type": "user_input", "content": blocks})

    def _model_steps(self) -> list[TimedStep]:
        text, _ = self._model_answer()
        output = {"type": "model_output", "content": [{"type": "text", "text": text}]}
        return [self._user_step(), TimedStep(self.duration, output)]

    def _model_answer(self) -> tuple[str, dict[str, Any]]:
        context = threads.answer_context(self.thread)
        return content_mod.model_answer(self.question, self.model or "", random.Random(self.seed), context)

    def _agent_steps(self) -> list[TimedStep]:
        c = self.content
        steps = [self._user_step()]
        n = len(c.thoughts)
        span = self.duration - self.queued_for
        searches = dict(c.searches)
        for i, summary in enumerate(c.thoughts):
            due = self.queued_for + (i + 1) * span / (n + 1)
            steps.append(TimedStep(due, self._thought(i, summary)))
            if i in searches:
                call_id = f"call_{i + 1}"
                call = {"type": "google_search_call", "id": call_id, "arguments": {"queries": searches[i]}}
                html = f'<div class="emulated-search">{len(searches[i])} queries</div>'
                result = {"type": "google_search_result", "call_id": call_id, "result": [{"search_suggestions": html}]}
                steps += [TimedStep(due, call), TimedStep(due, result)]
        report = self._plan() if self.mode == "plan" else c.report
        final = {
            "completed": report,
            "expired": report,
            "incomplete": c.partial,
            "budget_exceeded": c.partial,
            "requires_action": c.plan,
        }.get(self.outcome)
        if final is not None:
            steps.append(TimedStep(self.duration, {"type": "model_output", "content": final.content_blocks()}))
        return steps

    def _plan(self) -> content_mod.Report:
        thread = self.thread or threads.Thread(question=self.question)
        return threads.plan_report(self.content.title, self.plan_steps(), thread.changes)

    def _thought(self, index: int, summary: str) -> dict[str, Any]:
        """A thought step; its summary only with `thinking_summaries: "auto"` (default "none", Google's docs).

        Without summaries the step still exists but carries only the opaque `signature` the SDK's
        `ThoughtStep` allows, so clients see that the agent is working without seeing what it thinks.
        """
        if self.config.thinking_summaries:
            return {"type": "thought", "summary": [{"type": "text", "text": summary}]}
        digest = hashlib.sha256(f"{self.seed}:thought:{index}".encode()).digest()
        return {"type": "thought", "signature": base64.b64encode(digest).decode()}

    def visible_steps(self, t: float) -> list[dict[str, Any]]:
        end, _ = self.end()
        # A cancel only lands strictly before the natural end, so the final output stays out of it.
        limit = t if end is None else min(t, end)
        if limit < self.queued_for:  # only the input shows while queued, so a create need not write the report
            return [self._user_step().step]
        return [s.step for s in self.steps() if s.due <= limit]

    def usage(self) -> dict[str, Any]:
        if self.model:
            return self._model_answer()[1]
        return self.content.usage

    # ---- JSON ------------------------------------------------------------------------------
    def resource(self, t: float, include_input: bool = False) -> dict[str, Any]:
        status = self.status_at(t)
        steps = self.visible_steps(t)
        body: dict[str, Any] = {"id": self.id, "object": "interaction", "status": status}
        if self.agent:
            body["agent"] = self.agent
            body["agent_config"] = self.agent_config or {"type": "deep-research"}  # echoed as sent
        else:
            body["model"] = self.model
        body["created"] = iso(self.created_wall)
        body["updated"] = iso(self.created_wall + self._last_change(t, status))
        if self.labels is not None:
            body["labels"] = self.labels
        if self.previous_interaction_id:
            body["previous_interaction_id"] = self.previous_interaction_id
        if include_input:
            body["input"] = self.raw_input
        body["steps"] = steps
        if status in TERMINAL_STATUSES:
            body["usage"] = self.usage()
        if status == "failed":
            code, message = self.content.error if self.agent else ("internal", "Emulated model failure.")
            body["errors"] = [{"code": code, "message": message}]
        return body

    def _last_change(self, t: float, status: str) -> float:
        end, _ = self.end()
        if status in TERMINAL_STATUSES and end is not None:
            return end
        if t < self.queued_for:  # nothing but the input yet: no need to write the report to know that
            return 0.0
        due = [s.due for s in self.steps() if s.due <= t]
        return max([*due, self.queued_for if t >= self.queued_for else 0.0])

    def resource_bytes(self, t: float, include_input: bool = False) -> bytes:
        """Serialised resource; cached per (status, visible steps) so repeated polls are cheap."""
        if include_input:
            return dumps(self.resource(t, include_input=True))
        status = self.status_at(t)
        key = (status, len(self.visible_steps(t)) if status not in TERMINAL_STATUSES else -1, self.deleted)
        cached = self._json_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        data = dumps(self.resource(t))
        self._json_cache = (key, data)
        return data
