"""The load test's parameters: Locust options that also read `LOADTEST_*` environment variables.

They are registered on Locust's own parser, so they work on a command line (`locust -f
loadtest/locustfile.py --loadtest-batch 4`), in a locust.conf, and from the environment (how the
Kubernetes master and workers get them). A Locust master forwards them to its workers when it
starts users, so in a distributed run setting them on the master is enough.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

USER_KINDS = ("grpc", "http", "raw")
ARRIVALS = ("constant", "poisson")
TRANSPORTS = ("float", "uint8")


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


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    default: Any
    type: Any
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--loadtest-user", "LOADTEST_USER", "grpc", str,
           "which user runs when no User class is named: grpc (client.embed_batch over gRPC), "
           "http (the same over HTTP), raw (pre-built tensors: server + transport only)", USER_KINDS),
    Option("--loadtest-raw-protocol", "LOADTEST_RAW_PROTOCOL", "grpc", str,
           "protocol of the raw user (grpc or http; --host must match)", ("grpc", "http")),
    Option("--loadtest-model", "LOADTEST_MODEL", "pnasnet_large", str, "model name on the server"),
    Option("--loadtest-batch", "LOADTEST_BATCH", 1, int, "images per request"),
    Option("--loadtest-images", "LOADTEST_IMAGES", "", str,
           "folder of images to send (default: the project's sample images)"),
    Option("--loadtest-transport", "LOADTEST_TRANSPORT", "float", str,
           "float: float32 tensors; uint8: the client's compact transport", TRANSPORTS),
    Option("--loadtest-rate-per-user", "LOADTEST_RATE_PER_USER", 0.0, float,
           "open loop: requests/s each user starts on a fixed schedule whatever the latency "
           "(0: closed loop, each user waits for its response)"),
    Option("--loadtest-arrivals", "LOADTEST_ARRIVALS", "constant", str,
           "open loop inter-arrival times: constant or poisson", ARRIVALS),
    Option("--loadtest-max-inflight", "LOADTEST_MAX_INFLIGHT", 32, int,
           "open loop: requests one user may have outstanding; later arrivals wait for a slot "
           "and that wait counts as latency"),
    Option("--loadtest-think-ms", "LOADTEST_THINK_MS", 0.0, float,
           "closed loop: pause between a response and the next request"),
    Option("--loadtest-timeout", "LOADTEST_TIMEOUT", 120.0, float, "request timeout in seconds"),
    Option("--loadtest-attempts", "LOADTEST_ATTEMPTS", 1, int,
           "tries per request with the client's retry policy (1: no retries, so failures show)"),
    Option("--loadtest-steps", "LOADTEST_STEPS", "", str,
           "stepped ramp: user counts, e.g. 1,2,4,8 (each held for --loadtest-step-time)"),
    Option("--loadtest-step-time", "LOADTEST_STEP_TIME", "30s", str, "how long each step lasts"),
    Option("--loadtest-extras-file", "LOADTEST_EXTRAS_FILE", "", str,
           "where the master writes per-step statistics, generator health and the SLO verdict"),
    Option("--max-p50-ms", "LOADTEST_MAX_P50_MS", None, float, "SLO: highest p50 latency"),
    Option("--max-p95-ms", "LOADTEST_MAX_P95_MS", None, float, "SLO: highest p95 latency"),
    Option("--max-p99-ms", "LOADTEST_MAX_P99_MS", None, float, "SLO: highest p99 latency"),
    Option("--max-error-rate", "LOADTEST_MAX_ERROR_RATE", None, float,
           "SLO: highest failed/all requests ratio (given: failures within it do not fail the run)"),
    Option("--min-rps", "LOADTEST_MIN_RPS", None, float, "SLO: lowest requests/s"),
    Option("--min-images-per-s", "LOADTEST_MIN_IMAGES_PER_S", None, float, "SLO: lowest images/s"),
)


def add_locust_options(parser: Any) -> None:
    """Register OPTIONS on Locust's argument parser (configargparse: env vars and conf files)."""
    group = parser.add_argument_group("embedding load test")
    for opt in OPTIONS:
        kwargs: dict[str, Any] = dict(env_var=opt.env, default=opt.default, type=opt.type,
                                      help=f"{opt.help} (env {opt.env})")
        if opt.choices:
            kwargs["choices"] = opt.choices
        group.add_argument(opt.flag, **kwargs)


@dataclass(frozen=True)
class Settings:
    """Typed view of the options, read by each user when it starts (after the master's update)."""

    user: str = "grpc"
    raw_protocol: str = "grpc"
    model: str = "pnasnet_large"
    batch: int = 1
    images: str = ""
    transport: str = "float"
    rate_per_user: float = 0.0
    arrivals: str = "constant"
    max_inflight: int = 32
    think_ms: float = 0.0
    timeout: float = 120.0
    attempts: int = 1
    steps: tuple[float, ...] = ()
    step_time: float = 30.0
    extras_file: str = ""

    @classmethod
    def from_options(cls, options: Any) -> Settings:
        """From Locust's parsed options; missing ones (e.g. a bare Environment) take defaults."""
        values = {opt.dest: getattr(options, opt.dest, opt.default) if options is not None
                  else opt.default for opt in OPTIONS}
        settings = cls(
            user=values["loadtest_user"], raw_protocol=values["loadtest_raw_protocol"],
            model=values["loadtest_model"],
            batch=int(values["loadtest_batch"]), images=values["loadtest_images"] or "",
            transport=values["loadtest_transport"],
            rate_per_user=float(values["loadtest_rate_per_user"] or 0.0),
            arrivals=values["loadtest_arrivals"], max_inflight=int(values["loadtest_max_inflight"]),
            think_ms=float(values["loadtest_think_ms"] or 0.0),
            timeout=float(values["loadtest_timeout"]),
            attempts=int(values["loadtest_attempts"]),
            steps=parse_steps(values["loadtest_steps"]),
            step_time=parse_seconds(values["loadtest_step_time"]),
            extras_file=values["loadtest_extras_file"] or "")
        if settings.batch < 1 or settings.max_inflight < 1:
            raise ValueError("--loadtest-batch and --loadtest-max-inflight must be at least 1")
        if settings.steps and settings.step_time <= 0:
            raise ValueError("--loadtest-step-time must be positive with --loadtest-steps")
        return settings
