"""Every load-test option, declared once.

`OPTIONS` is the only table. From it come:
- the `python -m loadtest` command line (`add_cli_options`),
- the locustfile's options on Locust's own parser, which also read `LOADTEST_*` environment
  variables (`add_locust_options`; how plain `locust`, a locust.conf and Kubernetes pods set them),
- the runner's Locust command line (`locust_args`: CLI values passed on as locustfile options),
- the typed `Settings` each user reads (`Settings.from_options`),
- the Kubernetes Jobs' environment (`k8s_env`, written to `k8s/loadtest/*.env` by
  `python -m loadtest k8s-env`; a test checks the committed files are what the table gives).

A Locust master forwards locustfile options to its workers when it starts users, so in a
distributed run setting them on the master is enough.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, make_dataclass
from typing import Any

USER_KINDS = ("grpc", "http", "raw")
ARRIVALS = ("constant", "poisson")
#: What requests carry: the client's payload names (`client.settings`, without "auto").
PAYLOADS = ("float32", "uint8")
#: Old spelling still accepted, with a deprecation message.
PAYLOAD_ALIASES = {"float": "float32"}


def parse_seconds(text: str | float | int | None) -> float:
    """`90`, `90s`, `1.5m`, `1h30m`, `500ms` -> seconds."""
    if text is None or text == "":
        return 0.0
    if isinstance(text, (int, float)):
        return float(text)
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}; use e.g. 30s, 2m, 1m30s, 500ms")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def parse_steps(text: str | None) -> tuple[float, ...]:
    """`"1,2,4,8"` -> (1.0, 2.0, 4.0, 8.0); empty -> ()."""
    if not text:
        return ()
    values = tuple(float(v) for v in re.split(r"[,\s]+", text.strip()) if v)
    if any(v <= 0 for v in values):
        raise ValueError(f"steps must be positive: {text!r}")
    return values


def payload_name(value: str) -> str:
    """`float32` or `uint8`; the old `float` still works, with a DeprecationWarning."""
    text = str(value).strip().lower()
    if text in PAYLOAD_ALIASES:
        new = PAYLOAD_ALIASES[text]
        message = f"payload {text!r} is deprecated; use {new!r} (the client's name)"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        print(f"loadtest: {message}", file=sys.stderr)
        text = new
    if text not in PAYLOADS:
        raise argparse.ArgumentTypeError(f"payload must be one of {', '.join(PAYLOADS)}, "
                                         f"got {value!r}")
    return text


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}, got {value!r}")
        return value
    check.__name__ = "choice"
    return check


def _optional_float(text: Any) -> float | None:
    return None if text in (None, "") else float(text)


# Where an option is read:
LOCUST = "locust"  # by the locustfile (and given on `python -m loadtest` with the same meaning)
RUNNER = "runner"  # by `python -m loadtest` only (it turns them into Locust arguments)
INTERNAL = "internal"  # by the locustfile, set by the runner (not on `python -m loadtest`)
SLO = "slo"  # thresholds: both, under the same flag (--max-p95-ms) and LOADTEST_ variable


@dataclass(frozen=True)
class Option:
    """One option: its name (the Settings field), parser, default, help and where it is read."""

    name: str
    default: Any
    type: Callable[[Any], Any]
    help: str
    scope: str = LOCUST
    choices: tuple[str, ...] | None = None
    convert: Callable[[Any], Any] | None = None  # text -> the Settings value (durations, lists)
    #: The value the Kubernetes Jobs set (None: not set there), and which pods get it.
    k8s: str | None = None
    k8s_role: str = "all"  # "all" (master and workers) or "master"
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: An earlier name, still accepted (flag and variable) with a deprecation message.
    old_name: str | None = None

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def locust_flag(self) -> str:
        return self.cli_flag if self.scope == SLO else "--loadtest-" + self.name.replace("_", "-")

    @property
    def locust_dest(self) -> str:
        return self.locust_flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return "LOADTEST_" + self.name.upper()

    def value(self, raw: Any) -> Any:
        """Parsed value as Settings holds it."""
        if raw is None:
            raw = self.default
        if isinstance(raw, str) and self.type is not str:
            raw = self.type(raw) if raw != "" else self.default
        return self.convert(raw) if self.convert else raw


OPTIONS: tuple[Option, ...] = (
    # What to load.
    Option("user", "grpc", _choice(USER_KINDS),
           "grpc/http: client.embed_batch with encoded images (preprocessing in the client, as "
           "applications do); raw: pre-built requests (server + transport only)",
           choices=USER_KINDS, k8s="grpc"),
    Option("raw_protocol", "grpc", _choice(("grpc", "http")),
           "protocol of the raw user (http loads --http-host)", choices=("grpc", "http")),
    Option("model", "pnasnet_large", str, "model name on the server", k8s="pnasnet_large"),
    Option("batch", 1, int, "images per request", k8s="1"),
    Option("images", "", str, "folder of images to send (default: the project's sample images)"),
    Option("payload", "float32", payload_name,
           "what requests carry: float32 tensors, or uint8 pixels (a quarter of the bytes, through "
           "the server's <model>_uint8 ensemble); 'float' is the deprecated name of float32",
           choices=PAYLOADS, k8s="float32", old_name="transport"),
    Option("timeout", 120.0, float, "request timeout in seconds"),
    Option("attempts", 1, int,
           "tries per request with the client's retry policy (1: no retries, so a failing server "
           "shows as failures, not as slow successes)"),
    # How requests are paced.
    Option("think_ms", 0.0, float, "closed loop: pause between a response and the next request"),
    Option("arrivals", "constant", _choice(ARRIVALS), "open loop inter-arrival times",
           choices=ARRIVALS),
    Option("max_inflight", 32, int,
           "open loop: requests one user may have outstanding; later arrivals wait for a slot "
           "and that wait counts as latency"),
    Option("rate_per_user", 0.0, float,
           "open loop: requests/s each user starts on a fixed schedule whatever the latency "
           "(0: closed loop)", scope=INTERNAL),
    Option("steps", "", str, "stepped ramp: user counts, e.g. 1,2,4,8, each for --step-duration",
           convert=parse_steps),
    Option("step_duration", "10s", str, "how long each step of --steps lasts", convert=parse_seconds),
    Option("extras_file", "", str,
           "where the master writes exact latency, per-step rows, generator health and the SLO "
           "verdict (JSON)", scope=INTERNAL, k8s="/tmp/loadtest-extras.json"),
    # SLO gate.
    Option("max_p50_ms", None, _optional_float, "SLO: highest p50 latency (ms)", scope=SLO),
    Option("max_p95_ms", None, _optional_float, "SLO: highest p95 latency (ms)", scope=SLO,
           k8s="1000", k8s_role="master"),
    Option("max_p99_ms", None, _optional_float, "SLO: highest p99 latency (ms)", scope=SLO),
    Option("max_error_rate", None, _optional_float,
           "SLO: highest failed/all requests ratio (given: failures within it do not fail the run; "
           "without it any failed request fails the run)", scope=SLO, k8s="0.001",
           k8s_role="master"),
    Option("min_rps", None, _optional_float, "SLO: lowest requests/s", scope=SLO),
    Option("min_images_per_s", None, _optional_float, "SLO: lowest images/s", scope=SLO),
)

BY_NAME = {opt.name: opt for opt in OPTIONS}
SLO_NAMES = tuple(opt.name for opt in OPTIONS if opt.scope == SLO)

Settings = make_dataclass(
    "Settings",
    [(opt.name, Any, field(default=opt.value(None))) for opt in OPTIONS],
    frozen=True, namespace={
        "__doc__": "Typed view of OPTIONS, read by each user when it starts (after the master's "
                   "update): durations in seconds, steps as a tuple.",
        "from_options": classmethod(lambda cls, options: settings_from(cls, options)),
    })


def settings_from(cls: type, options: Any) -> Any:
    """Settings from Locust's parsed options; missing ones (a bare Environment) take defaults."""
    values = {opt.name: opt.value(getattr(options, opt.locust_dest, None) if options is not None
                                  else None) for opt in OPTIONS}
    settings = cls(**values)
    if settings.batch < 1 or settings.max_inflight < 1:
        raise ValueError("--loadtest-batch and --loadtest-max-inflight must be at least 1")
    if settings.steps and settings.step_duration <= 0:
        raise ValueError("--loadtest-step-duration must be positive with --loadtest-steps")
    return settings


def _help(opt: Option, with_env: bool) -> str:
    return f"{opt.help} (env {opt.env})" if with_env else opt.help


class _OldFlag(argparse._StoreAction):
    """Stores like any option; an earlier spelling of the flag also says what replaced it."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if option_string and option_string != self.option_strings[0]:
            _say_deprecated(f"{option_string} is deprecated; use {self.option_strings[0]}")
        super().__call__(parser, namespace, values, option_string)


def _say_deprecated(message: str) -> None:
    warnings.warn(message, DeprecationWarning, stacklevel=3)
    print(f"loadtest: {message}", file=sys.stderr)


def _deprecations(opt: Option) -> dict[str, Any]:
    return {"action": _OldFlag} if opt.old_name else {}


def _take_old_variable(opt: Option) -> None:
    """A Job or shell that still sets the old variable keeps working, and is told the new name."""
    old = "LOADTEST_" + opt.old_name.upper()  # type: ignore[union-attr]
    if old in os.environ and opt.env not in os.environ:
        _say_deprecated(f"{old} is deprecated; use {opt.env}")
        os.environ[opt.env] = os.environ[old]


def add_locust_options(parser: Any) -> None:
    """Register the locustfile's options on Locust's parser (configargparse: env vars, conf files)."""
    group = parser.add_argument_group("embedding load test")
    for opt in OPTIONS:
        if opt.scope == RUNNER:
            continue
        flags = [opt.locust_flag]
        if opt.old_name:
            flags.append("--loadtest-" + opt.old_name.replace("_", "-"))
            _take_old_variable(opt)
        group.add_argument(*flags, env_var=opt.env, default=opt.default, type=opt.type,
                           help=_help(opt, True), **_deprecations(opt), **opt.kwargs)


def add_cli_options(parser: argparse.ArgumentParser, names: Iterable[str] | None = None,
                    defaults: dict[str, Any] | None = None) -> None:
    """Add the table's options (those in `names`, default all but internal ones) to an argparse
    parser; `defaults` overrides a table default for this command."""
    wanted = set(names) if names is not None else None
    for opt in OPTIONS:
        if opt.scope == INTERNAL or (wanted is not None and opt.name not in wanted):
            continue
        default = (defaults or {}).get(opt.name, opt.default)
        flags = [opt.cli_flag] + (["--" + opt.old_name.replace("_", "-")] if opt.old_name else [])
        parser.add_argument(*flags, dest=opt.name, default=default, type=opt.type,
                            **_deprecations(opt),
                            help=_help(opt, False), metavar=None if not opt.choices else
                            "{" + ",".join(opt.choices) + "}", **opt.kwargs)


def locust_args(args: argparse.Namespace, **internal: Any) -> list[str]:
    """The locustfile options for a run: every table option the CLI holds, plus `internal` ones
    (the runner's derived values, e.g. rate_per_user); unset values are left out."""
    out: list[str] = []
    for opt in OPTIONS:
        if opt.scope == INTERNAL:
            value = internal.get(opt.name)
        else:
            value = getattr(args, opt.name, None)
        if value is None or value == "":
            continue
        out += [opt.locust_flag, value if isinstance(value, str) else f"{value:g}"
                if isinstance(value, float) else str(value)]
    return out


def k8s_env(role: str) -> dict[str, str]:
    """The LOADTEST_* variables the Kubernetes Jobs set, for `role` "all" or "master"."""
    return {opt.env: opt.k8s for opt in OPTIONS if opt.k8s is not None and opt.k8s_role == role}


K8S_ENV_FILES = {"all": "loadtest.env", "master": "loadtest-master.env"}


def k8s_env_file(role: str) -> str:
    """An env file for kustomize's configMapGenerator, each variable with its help."""
    lines = ["# Generated from loadtest/options.py by `python -m loadtest k8s-env`; do not edit.",
             "# " + ("Every Locust pod (master and workers)." if role == "all" else
                     "The master only: the release gate (the master Job exits 3 on a miss).")]
    for env, value in k8s_env(role).items():
        opt = next(o for o in OPTIONS if o.env == env)
        lines.append(f"# {opt.help}")
        lines.append(f"{env}={value}")
    return "\n".join(lines) + "\n"
