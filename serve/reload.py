"""`python -m serve reload`: make a running server serve the newest exported version, no restart.

The server runs with `--model-control-mode=explicit`, so it never rescans the repository by itself.
Asking it to load a model that is already loaded makes Triton load the new version beside the
serving one (warmup included) and only then retire the old one once its in-flight requests are
done: requests keep being answered throughout, by the old version until the new one is ready.
If the new version fails to load, the old one keeps serving and the error is reported.

The uint8 ensemble (`<model>_uint8`) is reloaded after the model, when the server has it, so it
picks up any change export wrote to its config. The same calls work against the Kubernetes
deployment through the admin-restricted model-repository API (`--admin-key`, see k8s/README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

DEFAULT_MODEL = "pnasnet_large"
ENSEMBLE_SUFFIX = "_uint8"  # export/ensemble.py names the ensemble this way
ADMIN_HEADER = "triton-admin-key"


class ReloadError(RuntimeError):
    """The server could not be reached or refused to load the model; the old version still serves."""


@dataclass(frozen=True)
class Reloaded:
    model: str
    before: list[str]
    after: list[str]

    def line(self) -> str:
        was = ", ".join(self.before) or "none"
        now = ", ".join(self.after) or "none"
        verb = "now serves" if self.before != self.after else "still serves"
        return f"{self.model}: {verb} version {now} (was {was})"


def default_url() -> str:
    return os.environ.get("TRITON_GRPC_URL") or f"127.0.0.1:{os.environ.get('GRPC_PORT', '8001')}"


def ready_versions(index: list[dict], model: str) -> list[str]:
    """Versions of `model` in state READY, in number order, from a repository index."""
    found = {m.get("version", "") for m in index if m.get("name") == model and m.get("state") == "READY"}
    return sorted(found, key=lambda v: (len(v), v))


def reload_model(url: str, model: str = DEFAULT_MODEL, *, admin_key: str | None = None,
                 with_ensemble: bool = True, timeout: float = 600.0) -> list[Reloaded]:
    """Load the newest version of `model` (and reload its ensemble) on the server at `url`."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    headers = {ADMIN_HEADER: admin_key} if admin_key else None
    ensemble = f"{model}{ENSEMBLE_SUFFIX}"
    try:
        with grpcclient.InferenceServerClient(url) as triton:
            def index() -> list[dict]:
                return triton.get_model_repository_index(headers=headers, as_json=True,
                                                         client_timeout=timeout).get("models", [])

            before = index()
            targets = [model]
            if with_ensemble and ready_versions(before, ensemble):
                targets.append(ensemble)
            for name in targets:
                try:
                    triton.load_model(name, headers=headers, client_timeout=timeout)
                except InferenceServerException as exc:
                    raise ReloadError(f"loading {name} failed ({exc.message()}); the server keeps "
                                      f"serving version {', '.join(ready_versions(index(), name))}"
                                      ) from exc
            after = index()
    except InferenceServerException as exc:
        raise ReloadError(f"{url}: {exc.message()}") from exc
    return [Reloaded(name, ready_versions(before, name), ready_versions(after, name))
            for name in targets]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve reload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=default_url(),
                   help="the server's gRPC address (default: TRITON_GRPC_URL, else 127.0.0.1:GRPC_PORT "
                        "or 8001: %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model to reload (default: %(default)s)")
    p.add_argument("--no-ensemble", action="store_true", help="do not reload <model>_uint8")
    p.add_argument("--admin-key", default=os.environ.get("TRITON_ADMIN_KEY"),
                   help="value of the triton-admin-key header, for servers that restrict the "
                        "model-repository API (default: TRITON_ADMIN_KEY)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the load")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for result in reload_model(args.url, args.model, admin_key=args.admin_key,
                                   with_ensemble=not args.no_ensemble, timeout=args.timeout):
            print(result.line(), flush=True)
    except ReloadError as exc:
        print(f"serve reload: error: {exc}", file=sys.stderr)
        return 1
    return 0
