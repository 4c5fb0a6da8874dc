"""One name and one default per idea across the library, the CLI and the environment; CLI messages."""

from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
from PIL import Image

import client
from client import EmbeddingClient, settings
from client import cli as cli_module
from client.testing import FakeTransport

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRITON_PAYLOAD", "TRITON_TRANSPORT", "TRITON_MODEL", "TRITON_PROTOCOL",
                 "TRITON_GRPC_URL", "TRITON_HTTP_URL"):
        monkeypatch.delenv(name, raising=False)


def test_library_cli_and_environment_share_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    c = EmbeddingClient()
    assert (c.url, c.model, c.protocol, c.payload) == ("localhost:8001", "pnasnet_large", "grpc",
                                                        "auto")
    args = cli_module.build_parser().parse_args(["embed", "x.jpg", "-o", "x.npy"])
    # The CLI leaves them to the client, so both read the same variables and defaults.
    assert (args.url, args.model, args.protocol, args.payload) == (None, None, None, None)
    assert args.timeout == c.timeout == settings.DEFAULT_TIMEOUT
    assert args.max_pixels == c.max_pixels and args.in_flight == c.max_in_flight
    monkeypatch.setenv("TRITON_PAYLOAD", "float32")
    monkeypatch.setenv("TRITON_MODEL", "other")
    monkeypatch.setenv("TRITON_PROTOCOL", "http")
    monkeypatch.setenv("TRITON_HTTP_URL", "triton:9000")
    c = EmbeddingClient()
    assert (c.url, c.model, c.protocol, c.payload) == ("triton:9000", "other", "http", "float32")
    assert client.get_default_client().payload == "float32"


@pytest.mark.parametrize("variable", ["TRITON_PAYLOAD", "TRITON_TRANSPORT", "TRITON_PROTOCOL"])
def test_a_wrong_environment_value_names_its_variable(variable: str,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(variable, "uint16")
    old_name = variable == "TRITON_TRANSPORT"
    with pytest.warns(DeprecationWarning) if old_name else contextlib.nullcontext():
        with pytest.raises(ValueError, match=f"^{variable} must be one of .*; got 'uint16'"):
            client.get_default_client()
        code = cli_module.main(["health"])
    assert code == 2 and f"client: {variable} must be one of" in capsys.readouterr().err


def test_old_environment_name_still_works_and_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_TRANSPORT", "uint8")
    with pytest.warns(DeprecationWarning, match="TRITON_TRANSPORT is renamed TRITON_PAYLOAD"):
        assert EmbeddingClient().payload == "uint8"
    monkeypatch.setenv("TRITON_PAYLOAD", "float32")  # the new name wins
    assert EmbeddingClient().payload == "float32"


def test_one_name_for_the_uint8_model_and_one_home_for_image_suffixes() -> None:
    assert settings.uint8_model_name("m") == client.compact_model_name("m") == "m_uint8"
    assert client.UINT8_SUFFIX == client.COMPACT_SUFFIX == "_uint8"
    from client import preprocess

    assert cli_module.IMAGE_SUFFIXES is preprocess.IMAGE_SUFFIXES


def test_console_scripts_point_at_the_clis() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["pnasnet-embed"] == "client.cli:main"
    assert scripts["pnasnet-loadtest"] == "loadtest.cli:main"
    for target in scripts.values():
        module, _, name = target.partition(":")
        if module == "client.cli":
            assert callable(getattr(importlib.import_module(module), name))
        else:  # the others need their extras; their file defines the function
            assert f"def {name}(" in (ROOT / (module.replace(".", "/") + ".py")).read_text()


# -- the embed command on the in-memory server -------------------------------------------------------

@pytest.fixture()
def fake_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's clients talk to a new in-memory server each (a client closes its transport)."""

    def with_fake(*args: Any, **kwargs: Any) -> EmbeddingClient:
        return EmbeddingClient(*args, transport=FakeTransport(), **kwargs)

    monkeypatch.setattr(cli_module, "EmbeddingClient", with_fake)


def test_the_bomb_message_names_the_cli_option_and_the_path_once(
        tmp_path: Path, fake_server: None, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(folder / "big.png")  # 1,200 pixels
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "small.png")  # 400 pixels
    out = tmp_path / "out.npy"
    code = cli_module.main(["embed", str(folder), "-o", str(out), "--no-progress",
                            "--max-pixels", "1000"])
    err = capsys.readouterr().err
    assert code == 1
    line = next(line for line in err.splitlines() if "failed:" in line)
    assert line == (f"  failed: {folder / 'big.png'}: InvalidImageError: image is 40x30 = 1,200 "
                    f"pixels, over the limit of 1,000 pixels (decompression bomb guard; to "
                    f"accept it, raise max_pixels= or the CLI's --max-pixels)")
    index = json.loads(out.with_suffix(".index.json").read_text())
    assert index["failures"][0]["error"].startswith("image is 40x30")  # no "item N", no path
    assert index["rows"] == [str(folder / "small.png")] and index["versions"] == ["3"]
    assert index["payload"] == "uint8" and index["model"] == "pnasnet_large"
    assert cli_module.main(["embed", str(folder), "-o", str(out), "--no-progress",
                            "--max-pixels", "2000"]) == 0  # the option the message names works


def test_the_old_transport_option_still_works(tmp_path: Path, fake_server: None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "a.npy"
    assert cli_module.main(["embed", str(tmp_path / "a.png"), "-o", str(out), "--no-progress",
                            "--transport", "float32"]) == 0
    assert "--transport is renamed --payload" in capsys.readouterr().err
    assert json.loads(out.with_suffix(".index.json").read_text())["payload"] == "float32"
