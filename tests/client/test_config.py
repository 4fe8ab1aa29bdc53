"""Construction: the key, the hosts, the environment, and what repr shows."""

from __future__ import annotations

import pytest

from novita_async import ClientConfig, ConfigurationError, NovitaClient, Timeouts
from novita_async._files import sniff_content_type

KEY = "sk_test_0123456789abcdefXYZ"


def test_missing_key_fails_at_construction_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOVITA_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="NOVITA_API_KEY"):
        NovitaClient()
    with pytest.raises(ConfigurationError, match="NOVITA_API_KEY"):
        NovitaClient(api_key="   ")


def test_environment_supplies_key_and_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVITA_API_KEY", KEY)
    monkeypatch.setenv("NOVITA_BASE_URL", "http://127.0.0.1:9/prefix/")
    monkeypatch.setenv("NOVITA_ASSETS_URL", "http://127.0.0.1:10/image")
    config = NovitaClient().config
    assert config.api_key == KEY
    assert str(config.api_url("/v3/model")) == "http://127.0.0.1:9/prefix/v3/model"
    assert str(config.assets_url) == "http://127.0.0.1:10/image"


def test_arguments_beat_the_environment_and_defaults_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVITA_API_KEY", "from-env-key-0000000")
    monkeypatch.delenv("NOVITA_BASE_URL", raising=False)
    monkeypatch.delenv("NOVITA_ASSETS_URL", raising=False)
    config = NovitaClient(KEY).config
    assert config.api_key == KEY
    assert str(config.base_url) == "https://api.novita.ai"
    assert str(config.assets_url) == "https://assets.novitai.com/image"


def test_repr_never_shows_the_key() -> None:
    client = NovitaClient(KEY, base_url="http://127.0.0.1:1")
    assert KEY not in repr(client)
    assert KEY not in repr(client.config)
    assert "base_url" in repr(client)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "ftp://example.com"},
        {"base_url": "not a url"},
        {"assets_url": "https://host/image?sig=1"},
        {"max_connections": 0},
    ],
)
def test_bad_options_are_configuration_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        NovitaClient(KEY, **kwargs)  # type: ignore[arg-type]


def test_the_api_calls_total_timeout_is_never_applied_to_downloads() -> None:
    timeouts = Timeouts(connect=5, sock_read=30, total=120, download_total=None)
    assert timeouts.for_api().total == 120
    assert timeouts.for_download().total is None
    # Downloads have a deadline of their own (see test_waits.py), not the API calls'.
    assert Timeouts(total=120).for_download().total == Timeouts().download_total != 120
    assert timeouts.for_download().sock_read == 30
    # Waiting for a pooled connection is not bounded by `connect`: only opening a socket is.
    assert timeouts.for_api().connect is None
    assert timeouts.for_api().sock_connect == 5
    with pytest.raises(ConfigurationError):
        Timeouts(connect=0)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a", None),
        (b"", None),
    ],
)
def test_content_type_is_sniffed_from_magic_bytes(data: bytes, expected: str | None) -> None:
    assert sniff_content_type(data) == expected


def test_client_config_is_exported() -> None:
    assert ClientConfig.resolve(KEY).max_connections == 100
