"""The client's logic on an in-memory Triton, the same checks for the blocking and asyncio clients."""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
from typing import Any

import numpy as np
import pytest
from PIL import Image

from client import (
    AsyncEmbeddingClient,
    ClientClosedError,
    EmbeddingClient,
    InferenceError,
    InvalidImageError,
    ModelContractError,
    ModelNotReadyError,
    RetryPolicy,
    ServerUnavailableError,
    VersionChangedError,
)
from client import core as core_module
from client.testing import AsyncFakeTransport, FakeModel, FakeTransport
from client.tracing import new_traceparent

FAST_RETRY = RetryPolicy(attempts=3, initial_delay=0.001, max_delay=0.002)


class Client:
    """One client of either kind, with coroutine methods run to completion (same calls)."""

    def __init__(self, kind: str, fake: FakeTransport | None = None, **options: Any) -> None:
        self.kind = kind
        self.fake = fake or (AsyncFakeTransport() if kind == "async" else FakeTransport())
        cls = AsyncEmbeddingClient if kind == "async" else EmbeddingClient
        options.setdefault("retry", FAST_RETRY)
        self.client = cls(transport=self.fake, **options)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: asyncio.run(attr(*a, **k))
        return attr

    def info(self) -> Any:
        return self.get_info() if self.kind == "async" else self.client.info


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def fake_of(kind: str, **kwargs: Any) -> FakeTransport:
    return (AsyncFakeTransport if kind == "async" else FakeTransport)(**kwargs)


def image(i: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)


def expected(fake: FakeTransport, images: list[np.ndarray]) -> np.ndarray:
    floats = np.stack(images).astype(np.float32) * np.float32(1 / 255)
    return floats.reshape(len(images), -1) @ fake.weights


# -- the model and the payload ---------------------------------------------------------------------

def test_auto_payload_picks_the_uint8_model_and_gives_float32_rows_bit_for_bit(kind: str) -> None:
    images = [image(i) for i in range(3)]
    auto, floats = Client(kind), Client(kind, payload="float32")
    assert auto.info().name == "pnasnet_large_uint8" and floats.info().name == "pnasnet_large"
    np.testing.assert_array_equal(auto.embed_batch(images), floats.embed_batch(images))
    np.testing.assert_allclose(auto.embed_batch(images), expected(auto.fake, images), rtol=1e-5, atol=1e-4)
    without = Client(kind, fake_of(kind, uint8=False))
    assert without.info().name == "pnasnet_large"  # auto falls back to float32


def test_uint8_payload_without_the_uint8_model_says_what_to_do(kind: str) -> None:
    c = Client(kind, fake_of(kind, uint8=False), payload="uint8")
    with pytest.raises(ModelNotReadyError, match="uint8 payload.*payload='float32'"):
        c.embed(image(0))


def test_a_model_of_the_wrong_shape_is_a_contract_error(kind: str) -> None:
    fake = fake_of(kind, uint8=False)
    fake.models["pnasnet_large"].output_shape = [8, 8, 3]  # an image, not an embedding
    with pytest.raises(ModelContractError, match="check the model name") as err:
        Client(kind, fake).embed(image(0))
    assert not isinstance(err.value, ModelNotReadyError) and not err.value.transient
    fake = fake_of(kind)
    fake.models["pnasnet_large_uint8"].datatype = "FP32"  # not the uint8 model export writes
    with pytest.raises(ModelContractError, match="not UINT8 pixels"):
        Client(kind, fake, payload="uint8").embed(image(0))
    assert Client(kind, fake).info().name == "pnasnet_large"  # auto: float32 instead


def test_an_unknown_model_is_model_not_ready(kind: str) -> None:
    with pytest.raises(ModelNotReadyError, match="not known"):
        Client(kind, model="nope", payload="float32").embed(image(0))


# -- batching, order, failures ---------------------------------------------------------------------

def test_batches_are_split_by_max_batch_size_in_order(kind: str) -> None:
    c = Client(kind, max_in_flight=3)
    images = [image(i) for i in range(10)]
    rows = c.embed_batch(images)
    assert sorted(len(r.batch) for r in c.fake.requests) == [2, 4, 4]  # fake max_batch_size 4
    np.testing.assert_allclose(rows, expected(c.fake, images), rtol=1e-5, atol=1e-4)
    result = c.embed_many(images, batch_size=3)
    np.testing.assert_allclose(result.embeddings, expected(c.fake, images), rtol=1e-5, atol=1e-4)
    assert c.embed_batch([]).shape == (0, 16)


def test_embed_many_reports_each_failure_at_its_index_and_embeds_the_rest(kind: str) -> None:
    c = Client(kind)
    images: list[Any] = [image(i) for i in range(9)]
    images[4] = b"not an image"
    result = c.embed_many(images, batch_size=2)
    assert [f.index for f in result.failures] == [4] and result.succeeded == 8
    failure = result.failures[0]
    assert failure.item == "<12 bytes>" and failure.reason == "not an image in a format Pillow reads"
    assert failure.error.index == 4
    assert np.isnan(result.embeddings[4]).all() and result.ok.sum() == 8
    with pytest.raises(InvalidImageError, match="^item 4 <12 bytes>: not an image"):
        c.embed_batch(images)


def test_one_bad_image_is_not_called_item_0(kind: str) -> None:
    with pytest.raises(InvalidImageError) as err:
        Client(kind).embed(b"junk")
    assert str(err.value) == "<4 bytes>: not an image in a format Pillow reads"
    assert err.value.index is None


def test_a_failed_request_fails_its_items_only(kind: str) -> None:
    c = Client(kind, retry=RetryPolicy.none())
    c.info()
    c.fake.fail("infer", c.fake.server_error("backend crashed"))
    result = c.embed_many([image(i) for i in range(8)], batch_size=4, max_in_flight=1)
    assert [f.index for f in result.failures] == [0, 1, 2, 3]
    assert all(f.kind == "InferenceError" and "backend crashed" in f.reason
               for f in result.failures)
    c.fake.fail("infer", c.fake.server_error())
    with pytest.raises(InferenceError):
        c.embed(image(0))


# -- retries ---------------------------------------------------------------------------------------

def test_transient_failures_are_retried_and_logged_at_debug(kind: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    c = Client(kind)
    c.info()
    c.fake.fail("infer", c.fake.unavailable(), c.fake.unavailable())
    with caplog.at_level(logging.DEBUG, logger="client"):
        assert c.embed(image(0)).shape == (16,)
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2 and all(r.levelno == logging.DEBUG for r in retries)
    assert "attempt 1 failed (ServerUnavailableError" in retries[0].getMessage()
    c.fake.fail("infer", *[c.fake.unavailable()] * 3)
    with caplog.at_level(logging.DEBUG, logger="client"), \
            pytest.raises(ServerUnavailableError):
        c.embed(image(0))
    assert any("giving up after 3 attempts" in r.getMessage() for r in caplog.records)


# -- the version that answered, and trace context ---------------------------------------------------

def test_answers_name_the_embedding_model_and_its_version(kind: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    c = Client(kind)  # uint8 model version 1, embedding model version 3
    answer = c.infer_batch([image(0), image(1)])
    assert (answer.model, answer.version, answer.versions) == ("pnasnet_large", "3", ("3", "3"))
    result = c.embed_many([image(0), b"bad", image(2)])
    assert result.model == "pnasnet_large" and result.versions == ["3", "", "3"]
    c.fake.models["pnasnet_large"].versions = ["4"]  # a rollout
    assert c.infer_batch([image(0)]).version == "3"  # cached for STEP_VERSION_TTL seconds
    monkeypatch.setattr(core_module, "STEP_VERSION_TTL", 0.0)
    assert c.infer_batch([image(0)]).version == "4"
    floats = Client(kind, payload="float32")
    assert floats.infer_batch([image(0)]).version == "3"  # the response's own version
    pinned = fake_of(kind)
    pinned.models["pnasnet_large_uint8"].steps[-1] = ("pnasnet_large", 2)
    assert Client(kind, pinned).infer_batch([image(0)]).version == "2"


def test_exact_versions_attribute_rows_across_a_rollout_mid_request(kind: str) -> None:
    """A rollout while a request is at the server: by default the cached version labels it; with
    exact_versions the client sees the change, sends the request again and names the new one."""
    def roll_out_once(fake: FakeTransport) -> None:
        def roll(_request: object) -> None:
            fake.models["pnasnet_large"].versions = ["4"]
            fake.during_infer = None
        fake.during_infer = roll

    cached = Client(kind)
    cached.infer_batch([image(0)])
    roll_out_once(cached.fake)
    assert cached.infer_batch([image(0)]).version == "3"  # the documented window

    exact = Client(kind, exact_versions=True)
    assert exact.infer_batch([image(0)]).version == "3"
    sent, asked = len(exact.fake.requests), exact.fake.calls.count(("metadata", "pnasnet_large"))
    roll_out_once(exact.fake)
    result = exact.embed_many([image(0), image(1), image(2), image(3), image(4)], batch_size=2)
    assert result.versions == ["4"] * 5
    # 3 requests; the one at the server during the rollout is sent again, and so is any other one
    # in flight that was sent while the cache still said 3. One version check follows each send.
    extra = len(exact.fake.requests) - sent
    assert 4 <= extra <= 6
    assert exact.fake.calls.count(("metadata", "pnasnet_large")) == asked + extra

    floats = Client(kind, payload="float32", exact_versions=True)  # answers name their version
    floats.infer_batch([image(0)])
    asked = floats.fake.calls.count(("metadata", "pnasnet_large"))
    assert floats.infer_batch([image(0)]).version == "3"
    assert floats.fake.calls.count(("metadata", "pnasnet_large")) == asked


def test_exact_versions_give_up_when_every_attempt_straddles_a_change(kind: str) -> None:
    c = Client(kind, exact_versions=True)
    c.infer_batch([image(0)])

    def roll(_request: object) -> None:
        model = c.fake.models["pnasnet_large"]
        model.versions = [str(int(model.versions[-1]) + 1)]

    c.fake.during_infer = roll
    with pytest.raises(VersionChangedError, match="changed during each of 3 attempts"):
        c.infer_batch([image(0)])


def test_every_request_of_a_call_carries_the_traceparent(kind: str) -> None:
    c = Client(kind)
    parent = new_traceparent()
    c.embed_many([image(i) for i in range(10)], batch_size=2, traceparent=parent)
    c.embed_arrays(np.stack([image(0)]), traceparent=parent)
    c.embed(image(0))
    headers = [r.headers for r in c.fake.requests]
    assert headers == [{"traceparent": parent}] * 6 + [None]
    with pytest.raises(ValueError, match="'00-xyz'"):
        c.embed(image(0), traceparent="00-xyz")


# -- arrays, normalisation ------------------------------------------------------------------------

def test_arrays_take_their_own_route_and_normalize_applies_everywhere(kind: str) -> None:
    c = Client(kind, normalize=True)
    pixels = np.stack([image(i) for i in range(5)])
    via_uint8 = c.embed_arrays(pixels)
    via_float = c.embed_arrays(pixels.astype(np.float32) / np.float32(255))
    assert [r.model for r in c.fake.requests] == ["pnasnet_large_uint8"] * 2 + ["pnasnet_large"] * 2
    np.testing.assert_allclose(via_uint8, via_float, rtol=1e-5, atol=1e-4)
    for block in (via_uint8, c.embed_batch(list(pixels)), c.embed_many(list(pixels)).embeddings,
                  c.embed(pixels[0])[None]):
        np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1.0, rtol=1e-5, atol=1e-4)
    with pytest.raises(InvalidImageError, match=r"batch must be \[n, 8, 8, 3\]"):
        c.embed_arrays(np.zeros((1, 4, 4, 3), np.uint8))


def test_preprocessing_follows_the_models_size(kind: str) -> None:
    c = Client(kind)
    buffer = io.BytesIO()
    Image.fromarray(image(0, 64)).save(buffer, "PNG")
    assert c.pixels(buffer.getvalue()).shape == (8, 8, 3)
    assert c.preprocess(image(0, 32)).dtype == np.float32


# -- server state, statistics, lifecycle ------------------------------------------------------------

def test_health_readiness_and_statistics(kind: str) -> None:
    c = Client(kind)
    assert c.is_live() and c.is_ready()
    report = c.health()
    assert report["live"] and report["models"] == {"pnasnet_large": True,
                                                   "pnasnet_large_uint8": True}
    c.embed_batch([image(0), image(1)])
    assert c.statistics().inference_count == 2  # the model requests go to
    assert c.statistics("pnasnet_large").inference_count == 0
    c.fake.live_now = False
    assert not c.is_ready()
    with pytest.raises(ServerUnavailableError, match="not ready after 0.05 s"):
        c.wait_until_ready(timeout=0.05, interval=0.01)
    c.fake.fail("live", c.fake.unavailable())
    assert c.is_live() is False  # never raises


def test_a_closed_client_says_so(kind: str) -> None:
    c = Client(kind)
    c.embed(image(0))
    c.close()
    for call in (lambda: c.embed(image(0)), c.is_ready, c.health):
        with pytest.raises(ClientClosedError, match="is closed; create a new one"):
            call()
    assert c.fake.closed


# -- names ------------------------------------------------------------------------------------------

def test_old_names_still_work_and_warn(kind: str) -> None:
    cls = AsyncEmbeddingClient if kind == "async" else EmbeddingClient
    with pytest.warns(DeprecationWarning, match="payload='float32'"):
        assert cls("triton:8001", transport="float32").payload == "float32"
    with pytest.warns(DeprecationWarning, match="uint8_model="):
        c = Client(kind, compact_model="other_uint8")
    assert c.uint8_model == "other_uint8"
    with pytest.warns(DeprecationWarning, match="'compact' is an old name"):
        assert Client(kind, payload="compact").payload == "uint8"
    with pytest.warns(DeprecationWarning):
        assert c.compact_model == "other_uint8"
    with pytest.warns(DeprecationWarning):
        assert c.transport == "auto"


def test_sync_and_async_clients_offer_the_same_methods() -> None:
    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    only_sync = public(EmbeddingClient) - public(AsyncEmbeddingClient)
    only_async = public(AsyncEmbeddingClient) - public(EmbeddingClient)
    # Properties that need the server are coroutines in asyncio code.
    assert only_sync == {"float_info", "transport_in_use"}
    assert only_async == {"get_info", "get_float_info"}
    for name in public(EmbeddingClient) & public(AsyncEmbeddingClient):
        sync, other = getattr(EmbeddingClient, name), getattr(AsyncEmbeddingClient, name)
        if callable(sync) and not isinstance(sync, type):
            assert inspect.signature(sync) == inspect.signature(other), name


def test_a_transport_of_the_other_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="needs a blocking transport, got AsyncFakeTransport"):
        EmbeddingClient(transport=AsyncFakeTransport())
    with pytest.raises(TypeError, match="needs an asyncio transport, got FakeTransport"):
        AsyncEmbeddingClient(transport=FakeTransport())


def test_a_fake_model_can_stand_for_any_contract() -> None:
    fake = FakeTransport(uint8=False, size=4, dim=5, max_batch_size=2)
    fake.models["other"] = FakeModel("other", "FP32", 6, 6, 3, 1)
    with EmbeddingClient(transport=fake, model="other") as c:
        assert c.embed(image(0)).shape == (3,) and c.info.size == (6, 6)


def test_asyncio_grpc_in_a_gevent_patched_process_says_why_instead_of_hanging() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = ("from gevent import monkey; monkey.patch_all()\n"
            "import asyncio\n"
            "from client import AsyncEmbeddingClient, EmbeddingError\n"
            "async def go():\n"
            "    try:\n"
            "        await AsyncEmbeddingClient('127.0.0.1:1').get_info()\n"
            "    except EmbeddingError as exc:\n"
            "        print(exc)\n"
            "asyncio.run(go())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "cannot run in a gevent-patched process" in out and "protocol='http'" in out
