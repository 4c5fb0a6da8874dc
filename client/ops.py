"""The steps the client's core yields, and the two drivers that perform them.

The core (`client.core`) is written once as generators: model resolution, batching, retries,
failures by item, progress. Where it needs the outside world it yields a step:

- `Call(fn)`: `fn(transport)`, one call to the server (a value, or an awaitable for asyncio);
- `Sleep(seconds)`: a pause (backoff, polling);
- `Prepare(fn, items)`: `fn` over items in the preprocessing threads; a list of results or
  exceptions, one per item;
- `Pipeline(plan)`: the chunks of a `client.pipeline.Plan`, several in flight at once.

`drive` runs such a generator to its return value where a blocking client waits, `adrive` where an
asyncio client awaits; `perform(step)` is the client's own (threads, or the event loop). An
exception from a step is thrown back into the generator at the `yield`, so the core handles it as
if it had made the call itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
Steps = Generator[Any, Any, T]


@dataclass(frozen=True)
class Call:
    fn: Callable[[Any], Any]


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Prepare:
    fn: Callable[[Any], Any]
    items: Sequence[Any]


@dataclass(frozen=True)
class Pipeline:
    plan: Any  # client.pipeline.Plan


def _advance(steps: Steps[T], ok: bool, value: Any) -> tuple[bool, Any]:
    """Send a step's result (or throw its exception) into `steps`: (finished, next step/result)."""
    try:
        return False, (steps.send(value) if ok else steps.throw(value))
    except StopIteration as stop:
        return True, stop.value


def drive(steps: Steps[T], perform: Callable[[Any], Any]) -> T:
    """Run `steps` to the end, performing each step with a blocking `perform`."""
    done, step = _advance(steps, True, None)
    while not done:
        try:
            ok, value = True, perform(step)
        except Exception as exc:  # noqa: BLE001 - handed to the core at its yield
            ok, value = False, exc
        done, step = _advance(steps, ok, value)
    return step


async def adrive(steps: Steps[T], perform: Callable[[Any], Awaitable[Any]]) -> T:
    """Run `steps` to the end, awaiting each step's `perform`."""
    done, step = _advance(steps, True, None)
    while not done:
        try:
            ok, value = True, await perform(step)
        except Exception as exc:  # noqa: BLE001 - handed to the core at its yield
            ok, value = False, exc
        done, step = _advance(steps, ok, value)
    return step
