"""Multi-turn threads: collaborative planning and follow-ups chained by `previous_interaction_id`.

Sources: the SDK's `DeepResearchAgentConfig.collaborative_planning` docstring ("the agent will provide a
research plan in its response ... and proceed only if the user confirms the plan in the next turn"), Google's
Deep Research docs (the plan comes back in a `completed` interaction; the next turn, with
`previous_interaction_id`, confirms it or asks for changes; a finished report can be continued, e.g. with
`model="gemini-3.1-pro-preview"`). The docs do not say how the agent tells a confirmation from a change
request; their sample (mirrored in third-party docs) keeps `collaborative_planning: true` while refining and
sends it false with "Plan looks good!" to start. So: true -> a (revised) plan, false/absent -> research.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from .content import EMULATION_NOTE, Extra, Report

Mode = Literal["research", "plan", "execute", "follow_up", "answer"]
BASE_STEPS = ("Background and definitions on {t}", "Key findings on {t}", "Open questions on {t}")
# A planning turn that only says yes changes nothing in the plan.
_CONFIRMATION = re.compile(
    r"^(?:\W*(?:yes|ok(?:ay)?|sure|great|perfect|confirm(?:ed)?|approved?|go ahead|proceed|start"
    r"|(?:the )?plan looks good|looks good|thanks?(?: you)?))+\W*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Thread:
    """What a turn knows from the turns before it."""

    question: str  # the research question being planned or researched (directive removed)
    stage: Literal["new", "planned", "reported"] = "new"
    plan: tuple[str, ...] = ()  # the latest plan's steps
    changes: tuple[str, ...] = ()  # change requests made while planning, in order
    report_title: str | None = None
    sources: tuple[dict[str, str], ...] = ()
    asked: tuple[str, ...] = ()  # follow-up questions after the report


def is_confirmation(text: str) -> bool:
    return bool(_CONFIRMATION.match(text.strip()))


def decide(previous: Thread | None, question: str, planning: bool, is_model: bool) -> tuple[Mode, Thread]:
    """The mode of a new turn and the thread it continues (a fresh one without a previous turn)."""
    if is_model:
        return "answer", previous or Thread(question=question)
    if previous is None:
        return ("plan" if planning else "research"), Thread(question=question)
    if planning and previous.stage == "planned":
        change = () if is_confirmation(question) else (question,)
        return "plan", replace(previous, changes=previous.changes + change)
    if planning:  # planning a new question on top of a report (or of a turn that produced nothing)
        return "plan", replace(previous, question=question, stage="new", plan=(), changes=())
    if previous.stage == "planned":
        return "execute", previous
    return "follow_up", previous


def after_plan(thread: Thread, steps: tuple[str, ...]) -> Thread:
    return replace(thread, stage="planned", plan=steps)


def after_report(thread: Thread, title: str, sources: list[dict[str, str]], question: str, mode: Mode) -> Thread:
    asked = (*thread.asked, question) if mode == "follow_up" else thread.asked
    return replace(thread, stage="reported", report_title=title, sources=tuple(sources), asked=asked)


def after_answer(thread: Thread, question: str) -> Thread:
    return replace(thread, asked=(*thread.asked, question))


def plan_steps(topic: str, changes: tuple[str, ...]) -> tuple[str, ...]:
    return (*(step.format(t=topic) for step in BASE_STEPS), *(f"Requested change: {c}" for c in changes))


def plan_report(title: str, steps: tuple[str, ...], changes: tuple[str, ...]) -> Report:
    """The plan as model output: a title, numbered steps, the changes applied, and the question to the user."""
    plan = Report()
    plan.add(f"# Research plan: {title}\n\n> {EMULATION_NOTE}\n\n")
    for number, step in enumerate(steps, start=1):
        plan.add(f"{number}. {step}\n")
    if changes:
        quoted = "; ".join(f'"{c}"' for c in changes)
        plan.add(f"\nRevision {len(changes)}: this plan includes the changes you asked for: {quoted}.\n")
    plan.add("\nReply to confirm this plan and start the research, or ask for changes.\n")
    return plan


def report_extra(mode: Mode, thread: Thread, title: str) -> Extra:
    """Sections (and title, sources) that make a report reflect the plan or the report it continues."""
    if mode == "execute":
        steps = "".join(f"{n}. {step}\n" for n, step in enumerate(thread.plan, start=1))
        changes = "".join(f'- "{c}"\n' for c in thread.changes) or "- none\n"
        body = f"This research followed the confirmed plan:\n\n{steps}\nChanges asked for while planning:\n\n{changes}"
        return Extra(sections=(f"## Research plan followed\n\n{body}\n",))
    if mode == "follow_up":
        return Extra(title=f"Follow-up: {title}", sources=thread.sources, sections=(_earlier(thread),))
    return Extra()


def _earlier(thread: Thread) -> str:
    lines = [f'This follow-up continues the earlier report "{thread.report_title}" and re-uses its sources:\n\n']
    lines += [f"- [{s['title']}]({s['url']})\n" for s in thread.sources]
    if thread.asked:
        lines.append("\nEarlier follow-up questions: " + "; ".join(f'"{q}"' for q in thread.asked) + "\n")
    return "## Building on the earlier report\n\n" + "".join(lines) + "\n"


def answer_context(thread: Thread | None) -> str:
    """The sentence a model continuation adds to its answer about what it builds on."""
    if thread is None:
        return ""
    if thread.stage == "reported":
        urls = ", ".join(s["url"] for s in thread.sources)
        text = f'It builds on the earlier report "{thread.report_title}" (sources: {urls}). '
    elif thread.stage == "planned":
        text = f"It builds on the research plan for: {thread.question} ({len(thread.plan)} steps). "
    else:
        return ""
    if thread.asked:
        text += "Earlier in this thread: " + "; ".join(f'"{q}"' for q in thread.asked) + ". "
    return text
