"""The job state machine: every transition of a job.

- create, steps: what a worker does (create; poll, record, time out), the only path to a terminal status besides the
  user's; common: what those two share (delays, the shared API budget, stepping several jobs);
- user: what the user decides (approve, revise, ask, cancel, abandon);
- inline: a job run in this process by `research run`.

Every write goes through store.transition, guarded by the job's current status, so a duplicated or late message
can repeat a step but never apply one twice. A finished interaction is stored by outcome.finish.
"""

from research_runner.lifecycle.common import Mapper, backoff_delay, planning
from research_runner.lifecycle.create import start, start_many, turn_kind
from research_runner.lifecycle.inline import (
    Interrupted,
    Review,
    api_settings,
    interrupted,
    interruptible,
    run_inline,
    run_thread,
    shielded,
)
from research_runner.lifecycle.steps import Polled, advance, poll, poll_job, poll_many, record
from research_runner.lifecycle.user import abandon, approve, ask, await_interaction, cancel, reload, revise

__all__ = [
    "Interrupted",
    "Mapper",
    "Polled",
    "Review",
    "abandon",
    "advance",
    "api_settings",
    "approve",
    "ask",
    "await_interaction",
    "backoff_delay",
    "cancel",
    "interrupted",
    "interruptible",
    "planning",
    "poll",
    "poll_job",
    "poll_many",
    "record",
    "reload",
    "revise",
    "run_inline",
    "run_thread",
    "shielded",
    "start",
    "start_many",
    "turn_kind",
]
