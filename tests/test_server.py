"""The real bundled tritonserver: readiness, live dynamic batching, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from client import EmbeddingClient
from client.stats import model_stats
from serve.server import LocalTritonServer, Ports, ServerError

ROOT = Path(__file__).resolve().parents[1]


def test_server_serves_the_cpu_config_of_the_same_repository(server: LocalTritonServer) -> None:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        cfg = triton.get_model_config("pnasnet_large", as_json=True)["config"]
    assert cfg["backend"] == "openvino_cpu"  # the IR beside the SavedModel (local_tf: TensorFlow)
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == "5000"


def test_metrics_endpoint_reports_inference(server: LocalTritonServer, grpc_url: str,
                                            sample_images: list[Path]) -> None:
    with EmbeddingClient(grpc_url) as client:
        client.embed(sample_images[0])
    body = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    assert 'nv_inference_request_success{model="pnasnet_large"' in body


def test_dynamic_batching_merges_concurrent_single_image_requests(grpc_url: str,
                                                                  sample_images: list[Path]) -> None:
    """64 single-image requests in flight at once must run as fewer, larger model executions."""
    import threading

    import tritonclient.grpc as grpcclient

    requests = 64
    with EmbeddingClient(grpc_url) as c:
        pixels = c.preprocess(sample_images[0])[None]
    inp = grpcclient.InferInput("images", list(pixels.shape), "FP32")
    inp.set_data_from_numpy(pixels)
    done = threading.Semaphore(0)
    errors: list = []

    def finished(result, error) -> None:  # noqa: ANN001 - tritonclient's callback signature
        if error is not None:
            errors.append(error)
        done.release()

    before = model_stats(grpc_url, "pnasnet_large")
    with grpcclient.InferenceServerClient(grpc_url) as triton:
        for _ in range(requests):
            triton.async_infer("pnasnet_large", [inp], callback=finished)
        for _ in range(requests):
            assert done.acquire(timeout=300)
    delta = model_stats(grpc_url, "pnasnet_large") - before
    assert errors == []
    assert delta.success_count == requests and delta.inference_count == requests
    # Fewer executions than requests means the batcher merged requests into larger batches.
    assert delta.execution_count < requests
    assert delta.avg_batch > 1.0


def _shm(prefix: str) -> list[str]:
    return [p.name for p in Path("/dev/shm").glob(f"{prefix}*")]


def test_stop_leaves_no_process_and_no_shared_memory(exported_repo: Path, tmp_path: Path) -> None:
    srv = LocalTritonServer(exported_repo, ports=Ports.free(), work_dir=tmp_path)
    srv.start(timeout=300)
    pid = srv.process.pid
    assert _shm(srv.shm_prefix), "the Python backend should have made its shared memory"
    assert srv.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no process of the server's group survives
    assert _shm(srv.shm_prefix) == []


def test_start_failure_reports_the_log(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "broken" / "configs").mkdir(parents=True)
    (repo / "broken" / "configs" / "cpu.pbtxt").write_text('name: "broken"\nbackend: "nope"\n')
    srv = LocalTritonServer(repo, ports=Ports.free(), work_dir=tmp_path / "w")
    with pytest.raises(ServerError, match="exited with code"):
        srv.start(timeout=120)
    assert srv.process is None


def test_empty_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="export one first"):
        LocalTritonServer(tmp_path, ports=Ports.free(), work_dir=tmp_path / "w").start()


def test_an_unknown_config_name_lists_the_ones_there(tmp_path: Path) -> None:
    for name in ("cpu", "local_tf"):
        (tmp_path / "m" / "configs").mkdir(parents=True, exist_ok=True)
        (tmp_path / "m" / "configs" / f"{name}.pbtxt").write_text('name: "m"\n')
    server = LocalTritonServer(tmp_path, ports=Ports.free(), work_dir=tmp_path / "w",
                               config_name="tf")
    with pytest.raises(ServerError, match=r"configs/tf\.pbtxt; the config names there: cpu, "
                                          r"local_tf \(--config-name\)"):
        server.start()
    assert server.process is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_cli_stops_cleanly_on_signal(exported_repo: Path, tmp_path: Path, sig: int) -> None:
    ports = Ports.free()
    env = dict(os.environ, HTTP_PORT=str(ports.http), GRPC_PORT=str(ports.grpc),
               METRICS_PORT=str(ports.metrics))
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve", "--repository", str(exported_repo), "--work-dir",
         str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    lines = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("ready:") or time.monotonic() > deadline:
            break
    assert any(line.startswith("ready:") for line in lines), "".join(lines)
    assert f"127.0.0.1:{ports.grpc}" in "".join(lines)
    assert EmbeddingClient(f"127.0.0.1:{ports.grpc}").is_ready()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped" in out
    # nothing listens any more: the tritonserver child is gone too
    assert not EmbeddingClient(f"127.0.0.1:{ports.grpc}").is_ready()
    assert _processes_with_arg(f"--grpc-port={ports.grpc}") == []


def _processes_with_arg(arg: str) -> list[int]:
    found = []
    for proc_dir in Path("/proc").iterdir():
        try:
            if proc_dir.name.isdigit() and arg.encode() in (proc_dir / "cmdline").read_bytes():
                found.append(int(proc_dir.name))
        except OSError:
            continue
    return found
