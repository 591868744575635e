"""Checks on what a user gives us: a question, an agent, an idempotency key, a batch name. One place each.

Each returns the cleaned value or raises InvalidInput with a one-line message that says what to do.
"""

from __future__ import annotations

from research_runner.constants import AGENTS, IDEMPOTENCY_KEY_MAX_CHARS, MAX_QUESTION_CHARS
from research_runner.exceptions import InvalidInput


def question_problem(question: str) -> str | None:
    """Why a question cannot be submitted, or None; shared by every path that stores one."""
    text = question.strip()
    if not text:
        return "the question is empty; pass the research question as text"
    if len(text) > MAX_QUESTION_CHARS:
        return f"the question is {len(text)} characters long; the limit is {MAX_QUESTION_CHARS}"
    if "\x00" in text:
        return "the question contains a NUL character, which cannot be stored; remove it"
    return None


def clean_question(question: str) -> str:
    problem = question_problem(question)
    if problem:
        raise InvalidInput(problem)
    return question.strip()


def agent_problem(agent: str) -> str | None:
    if agent not in AGENTS:
        return f"unknown agent {agent!r}; choose one of: {', '.join(AGENTS)}"
    return None


def clean_agent(agent: str) -> str:
    problem = agent_problem(agent)
    if problem:
        raise InvalidInput(problem)
    return agent


def key_problem(key: str) -> str | None:
    if not key.strip() or len(key) > IDEMPOTENCY_KEY_MAX_CHARS or "\x00" in key:
        return f"the idempotency key must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} characters"
    return None


def clean_key(key: str | None) -> str | None:
    if key is None:
        return None
    problem = key_problem(key)
    if problem:
        raise InvalidInput(problem)
    return key
