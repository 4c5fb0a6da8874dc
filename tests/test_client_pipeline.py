"""The client against the session's real server: bad input, order, parity, timeouts, async, retries."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_client_preprocess import _with_orientation, bad_inputs, encode, photo_like

from client import (
    AsyncEmbeddingClient,
    EmbeddingClient,
    InvalidImageError,
    RequestTimeoutError,
    ServerUnavailableError,
    preprocess,
)
from client.errors import ModelNotReadyError
from client.retry import RetryPolicy, call_with_retry
from serve.server import LocalTritonServer, free_port

EMBEDDING_RTOL = preprocess.EMBEDDING_TOLERANCE  # relative L2, fast vs reference preprocessing


def relative_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def emb(grpc_url: str):  # noqa: ANN201
    with EmbeddingClient(grpc_url, payload="uint8", max_in_flight=3) as c:
        yield c


@pytest.fixture(scope="module")
def distinct_items() -> list[np.ndarray]:
    """Small distinct pictures: any mix-up of rows shows as a wrong embedding."""
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(37)]


@pytest.fixture(scope="module")
def singles(emb: EmbeddingClient, distinct_items: list[np.ndarray]) -> np.ndarray:
    return np.stack([emb.embed(item) for item in distinct_items])


# -- bad input ------------------------------------------------------------------------------------

def test_each_bad_input_gets_its_typed_error_and_the_server_stays_ready(
        emb: EmbeddingClient, tmp_path: Path, sample_images: list[Path]) -> None:
    good = sample_images[0]
    corpus = bad_inputs(tmp_path)
    for name, (item, reason) in corpus.items():
        with pytest.raises(InvalidImageError, match=reason) as err:
            emb.embed_batch([good, item, good])
        assert err.value.index == 1, name
        assert "item 1" in str(err.value)
    assert emb.is_ready()
    # The same corpus through embed_many: each failure at its index, the good rows all embedded.
    (tmp_path / "again").mkdir()
    corpus = bad_inputs(tmp_path / "again")  # fresh file objects
    items: list[object] = []
    bad_at = []
    for item, _reason in corpus.values():
        items.append(good)
        bad_at.append(len(items))
        items.append(item)
    result = emb.embed_many(items, batch_size=4)
    assert [f.index for f in result.failures] == bad_at
    assert all(isinstance(f.error, InvalidImageError) and f.error.index == f.index
               for f in result.failures)
    assert result.ok.sum() == len(items) - len(bad_at) and result.succeeded == result.ok.sum()
    assert np.isnan(result.embeddings[bad_at]).all()
    np.testing.assert_allclose(result.embeddings[result.ok], np.broadcast_to(
        emb.embed(good), (int(result.ok.sum()), 4320)), rtol=1e-4, atol=1e-4)
    assert emb.is_ready()


def test_pixel_limit_is_per_client(grpc_url: str, sample_images: list[Path]) -> None:
    with EmbeddingClient(grpc_url, max_pixels=1000) as c:
        with pytest.raises(InvalidImageError, match="over the limit of 1,000 pixels"):
            c.embed(sample_images[0])


# -- order --------------------------------------------------------------------------------------------

def test_embed_many_keeps_input_order_with_requests_in_flight(
        emb: EmbeddingClient, distinct_items: list[np.ndarray], singles: np.ndarray,
        capsys: pytest.CaptureFixture[str]) -> None:
    result = emb.embed_many(distinct_items, batch_size=3, max_in_flight=4, progress=True)
    assert result.failures == []
    np.testing.assert_allclose(result.embeddings, singles, rtol=1e-4, atol=1e-4)
    assert "37/37" in capsys.readouterr().err  # the progress bar ran to the end
    # A generator works too (read once), and a large embed_batch takes the pipeline.
    again = emb.embed_many(item for item in distinct_items[:10])
    np.testing.assert_allclose(again.embeddings, singles[:10], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(emb.embed_batch(distinct_items), singles, rtol=1e-4, atol=1e-4)


def test_one_client_shared_by_threads_keeps_every_answer_with_its_question(
        emb: EmbeddingClient, distinct_items: list[np.ndarray], singles: np.ndarray) -> None:
    results: dict[int, np.ndarray] = {}

    def work(start: int) -> None:
        for i in range(start, len(distinct_items), 4):
            results[i] = emb.embed(distinct_items[i])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.stack([results[i] for i in range(len(distinct_items))]), singles,
                               rtol=1e-4, atol=1e-4)


def test_asyncio_client_keeps_order_under_concurrency(
        grpc_url: str, distinct_items: list[np.ndarray], singles: np.ndarray) -> None:
    async def main() -> tuple[np.ndarray, list[np.ndarray], list[int]]:
        async with AsyncEmbeddingClient(grpc_url, payload="uint8", normalize=False) as c:
            await c.wait_until_ready(30)
            many = await c.embed_many([*distinct_items[:20], b"broken"], batch_size=3,
                                      max_in_flight=4)
            each = await asyncio.gather(*(c.embed(item) for item in distinct_items[:12]))
            return many.embeddings[:20], list(each), [f.index for f in many.failures]

    many, each, failed = asyncio.run(main())
    assert failed == [20]
    np.testing.assert_allclose(many, singles[:20], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.stack(each), singles[:12], rtol=1e-4, atol=1e-4)


# -- results ------------------------------------------------------------------------------------------

def test_fast_preprocessing_gives_the_reference_embedding_within_tolerance(grpc_url: str) -> None:
    jpegs = [encode(photo_like(w, h, seed=s), "JPEG", quality=90)
             for s, (w, h) in enumerate([(1920, 1080), (4000, 3000), (1280, 720)])]
    with EmbeddingClient(grpc_url) as fast, \
            EmbeddingClient(grpc_url, fast_preprocessing=False) as reference:
        got, expected = fast.embed_batch(jpegs), reference.embed_batch(jpegs)
    assert (relative_l2(got, expected) <= EMBEDDING_RTOL).all(), relative_l2(got, expected)


def test_a_rotated_photo_embeds_like_the_upright_one(emb: EmbeddingClient) -> None:
    upright = photo_like(640, 400, seed=9)
    vectors = emb.embed_batch([encode(upright, "JPEG", quality=95),
                               *(_with_orientation(upright, o, "JPEG") for o in (3, 6, 8)),
                               Image.open(io.BytesIO(_with_orientation(upright, 6, "PNG")))])
    assert (relative_l2(vectors[1:], vectors[0]) <= EMBEDDING_RTOL).all()
    # Without applying EXIF the picture would be sideways: a clearly different embedding.
    sideways = emb.embed(np.asarray(upright.transpose(Image.Transpose.ROTATE_90)))
    assert relative_l2(sideways, vectors[0]) > 10 * relative_l2(vectors[2], vectors[0])


def test_normalize_gives_unit_vectors_on_every_path(grpc_url: str,
                                                   sample_images: list[Path]) -> None:
    with EmbeddingClient(grpc_url, normalize=True, payload="uint8") as c:
        rows = [c.embed(sample_images[0])[None], c.embed_batch(sample_images),
                c.embed_many(sample_images * 3, batch_size=2).embeddings]
    for block in rows:
        np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1.0, rtol=1e-5)


# -- timeouts, health, retries --------------------------------------------------------------------

def test_per_call_timeout_is_a_typed_error_and_not_retried(grpc_url: str,
                                                           sample_images: list[Path]) -> None:
    attempts = []
    with EmbeddingClient(grpc_url) as c:
        c.info  # noqa: B018 - contract first, so the timeout hits the inference call
        with pytest.raises(RequestTimeoutError) as err:
            call_with_retry(lambda: c.embed(sample_images[0], timeout=1e-4), c.retry,
                            on_retry=lambda *a: attempts.append(a))
        assert isinstance(err.value, TimeoutError) and attempts == []
        assert c.embed(sample_images[0]).shape == (4320,)  # the client is fine afterwards


def test_health_report(grpc_url: str) -> None:
    with EmbeddingClient(grpc_url) as c:
        report = c.health()
    assert report["live"] and report["ready"]
    assert report["models"] == {"pnasnet_large": True, "pnasnet_large_uint8": True}
    with EmbeddingClient(f"127.0.0.1:{free_port()}") as down:
        report = down.health()
        assert not report["live"] and "error" in report
        assert not down.is_live() and not down.is_ready()


def test_retries_back_off_with_jitter_and_give_up(sample_images: list[Path]) -> None:
    policy = RetryPolicy(attempts=4, initial_delay=0.01, multiplier=2.0, max_delay=0.02,
                         deadline=None)
    delays = list(policy.delays())
    assert len(delays) == 3 and all(0.0 <= d <= cap for d, cap in zip(delays, (0.01, 0.02, 0.02),
                                                                       strict=True))
    seen: list[float] = []
    with EmbeddingClient(f"127.0.0.1:{free_port()}", retry=policy) as down:
        with pytest.raises(ServerUnavailableError):
            call_with_retry(lambda: down.embed(sample_images[0]), RetryPolicy.none(),
                            on_retry=lambda *a: seen.append(a[2]))
    # Only transient errors are retried.
    assert policy.should_retry(ServerUnavailableError("down"))
    assert policy.should_retry(ModelNotReadyError("unloading", transient=True))
    assert not policy.should_retry(ModelNotReadyError("unknown model"))
    assert not policy.should_retry(InvalidImageError("bad"))
    assert not policy.should_retry(RequestTimeoutError("slow"))
    assert RetryPolicy(retry_timeouts=True).should_retry(RequestTimeoutError("slow"))


def test_transient_failures_are_retried_until_they_pass() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ServerUnavailableError("restarting")
        return "ok"

    retries: list[tuple] = []
    policy = RetryPolicy(attempts=5, initial_delay=0.001, max_delay=0.002)
    assert call_with_retry(flaky, policy, on_retry=lambda *a: retries.append(a)) == "ok"
    assert len(calls) == 3 and [r[0] for r in retries] == [1, 2]


def test_wait_until_ready(grpc_url: str) -> None:
    with EmbeddingClient(grpc_url) as c:
        c.wait_until_ready(timeout=30)


def test_server_restart_during_embed_many_loses_nothing(exported_repo: Path, tmp_path: Path,
                                                        sample_images: list[Path],
                                                        grpc_url: str) -> None:
    """Stop and start a server while embed_many runs: every item ends embedded or failed."""
    from client.stats import model_stats
    from serve.server import Ports

    items = [sample_images[i % len(sample_images)] for i in range(240)]
    with EmbeddingClient(grpc_url, payload="uint8") as reference_client:
        expected = {p: reference_client.embed(p) for p in sample_images}
    srv = LocalTritonServer(exported_repo, ports=Ports.free(), work_dir=tmp_path)
    srv.start(timeout=300)
    policy = RetryPolicy(attempts=100, initial_delay=0.2, max_delay=1.0, deadline=180)
    outcome: dict[str, object] = {}
    try:
        with EmbeddingClient(srv.grpc_url, payload="uint8", retry=policy, batch_size=2,
                             max_in_flight=2) as c:
            c.info  # noqa: B018

            def run() -> None:
                try:
                    outcome["result"] = c.embed_many(items)
                except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                    outcome["error"] = exc

            worker = threading.Thread(target=run)
            worker.start()
            pause = threading.Event()
            while model_stats(srv.grpc_url, "pnasnet_large").inference_count < 30:
                assert worker.is_alive(), outcome  # still running when the server goes down
                pause.wait(0.05)
            srv.stop()
            srv.start(timeout=300)
            worker.join(timeout=240)
            assert not worker.is_alive()
    finally:
        srv.stop()
    assert "error" not in outcome, outcome
    result = outcome["result"]
    failed = {f.index for f in result.failures}
    embedded = set(np.flatnonzero(result.ok))
    assert failed | embedded == set(range(len(items))) and not failed & embedded
    for i in embedded:
        np.testing.assert_allclose(result.embeddings[i], expected[items[i]], rtol=1e-4, atol=1e-4)
    # The outage was bridged by retries, not written off.
    assert len(embedded) >= 0.9 * len(items), [f.reason for f in result.failures][:3]
