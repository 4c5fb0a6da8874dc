"""The load shape: fixed users, or a stepped ramp (--loadtest-steps), marking each step's start."""

from __future__ import annotations

import logging

from locust import LoadTestShape

from loadtest.listeners import state_of
from loadtest.options import Settings

log = logging.getLogger("loadtest")


class LoadtestShape(LoadTestShape):
    """Fixed users (-u/-r/-t, as without a shape), or a stepped ramp with --loadtest-steps.

    With a shape Locust leaves --run-time to it, so both modes end the run at --run-time.
    """

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self._step = -1

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        settings = Settings.from_options(options)
        if options.run_time and self.get_run_time() >= options.run_time:
            return None
        if not settings.steps:
            return int(options.num_users or 1), float(options.spawn_rate or 1)
        index = int(self.get_run_time() // settings.step_duration)
        if index >= len(settings.steps):
            return None
        users = int(settings.steps[index])
        if index != self._step:
            self._step = index
            state = state_of(self.runner.environment)
            state.flush_local()  # a single process: what it recorded belongs to the step before
            state.mark_step(index, users, self.runner.stats.entries)
            log.info("step %d: %d users", index, users)
        return users, float(options.spawn_rate or max(settings.steps))
