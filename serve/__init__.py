"""The local Triton server: the `tritonserver` bundled in nvidia-pytriton, on CPU, for development,
demos and tests. It serves the same model repository as the GPU deployment, choosing the CPU config
with `--model-config-name=cpu`."""

from serve.server import LocalTritonServer, Ports, ServerError, StartCancelled

__all__ = ["LocalTritonServer", "Ports", "ServerError", "StartCancelled"]
