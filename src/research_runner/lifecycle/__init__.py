"""The job state machine: every transition of a job, in three rooms.

- steps: what a worker does (create, poll, record, time out), the only path to a terminal status besides the user's;
- user: what the user decides (approve, revise, ask, cancel, abandon);
- inline: a job run in this process by `research run`.

Every write goes through store.transition, guarded by the job's current status, so a duplicated or late message
can repeat a step but never apply one twice. A finished interaction is stored by outcome.finish.
"""

from research_runner.lifecycle.inline import Interrupted, interruptible, run_inline, shielded
from research_runner.lifecycle.steps import (
    Mapper,
    Polled,
    advance,
    backoff_delay,
    planning,
    poll,
    poll_job,
    poll_many,
    record,
    start,
    start_many,
    turn_kind,
)
from research_runner.lifecycle.user import abandon, approve, ask, await_interaction, cancel, reload, revise

__all__ = [
    "Interrupted",
    "Mapper",
    "Polled",
    "abandon",
    "advance",
    "approve",
    "ask",
    "await_interaction",
    "backoff_delay",
    "cancel",
    "interruptible",
    "planning",
    "poll",
    "poll_job",
    "poll_many",
    "record",
    "reload",
    "revise",
    "run_inline",
    "shielded",
    "start",
    "start_many",
    "turn_kind",
]
