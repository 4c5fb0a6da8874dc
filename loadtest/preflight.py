"""Check the target before a run: a load test against nothing must fail at once, saying why.

Without this a run against a wrong address or a server without the model lasts its whole duration,
then prints zeros and a "reliable" generator before the real cause. Here one call to the server
(liveness, readiness of the model requests go to, and of the float model behind the uint8
ensemble) decides, within a few seconds, and the reason is one line.
"""

from __future__ import annotations

from client import EmbeddingClient

#: Exit code of a run that did not start because its target is not there.
TARGET_EXIT_CODE = 5


def check_target(url: str, protocol: str, model: str, payload: str,
                 timeout: float = 5.0) -> str | None:
    """None when the server answers at `url` and the model (its uint8 ensemble for the uint8
    payload) is loaded and ready; else the reason, as one line."""
    try:
        client = EmbeddingClient(url, model, protocol=protocol, payload=payload,  # type: ignore[arg-type]
                                 timeout=timeout)
    except ValueError as exc:
        return f"bad target {url!r}: {exc}"
    with client:
        health = client.health()
    if not health["live"]:
        detail = health.get("error") or "no answer"
        return (f"no Triton server answers over {protocol} at {url} ({detail}); check the address "
                f"and port ({'--http-host' if protocol == 'http' else '--host'})")
    needed = [client.uint8_model, model] if payload == "uint8" else [model]
    missing = [name for name in needed if not health["models"].get(name)]
    if missing:
        what = " and ".join(f"{n!r}" for n in missing)
        hint = (" (the uint8 payload needs the ensemble that export writes beside the model)"
                if client.uint8_model in missing else "")
        return f"the server at {url} is up, but model {what} is not loaded or not ready{hint}"
    return None
