"""The Hub client's retry policy and error messages as the hf target uses them, on real client exceptions and a
closed port."""

from __future__ import annotations

import socket

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from publisher.errors import PublishError
from publisher.hub import is_transient
from publisher.targets.hf import HfTarget


def http_error(status: int, body: str = "") -> HfHubHTTPError:
    request = httpx2.Request("POST", "http://127.0.0.1:9/api/models/a/b/commit/main")
    response = httpx2.Response(status, request=request, text=body)
    return HfHubHTTPError(f"{status} error", response=response, server_message=body or None)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 507])
def test_server_errors_and_rate_limits_are_retried(status: int) -> None:
    assert is_transient(http_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    assert not is_transient(http_error(status))


def test_wrapped_and_connection_errors_are_classified_by_their_cause() -> None:
    try:
        try:
            raise http_error(503)
        except HfHubHTTPError as inner:
            raise RuntimeError("Error while uploading 'x.gguf' to the Hub.") from inner
    except RuntimeError as outer:
        assert is_transient(outer)
    assert is_transient(httpx2.ConnectError("refused"))
    assert not is_transient(OfflineModeIsEnabled("offline"))
    assert not is_transient(ValueError("malformed response"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_hub_is_retried_with_exponential_backoff_then_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    waits: list[float] = []
    target = HfTarget(endpoint=f"http://127.0.0.1:{_closed_port()}", token="hf_x", attempts=3, backoff_s=0.5)
    target.hub.sleep = waits.append

    with pytest.raises(PublishError) as caught:
        target.repo_state("tester/Tiny-GGUF")

    assert waits == [0.5, 1.0]
    message = str(caught.value)
    assert message.startswith(f"reading {target.endpoint}/tester/Tiny-GGUF failed (3 attempts): ")
    assert "ConnectError" in message and "not sent again when you re-run" in message


def test_offline_mode_is_named_and_not_retried() -> None:
    waits: list[float] = []
    target = HfTarget(endpoint="http://127.0.0.1:9", token="hf_x", attempts=3, backoff_s=0.5, sleep=waits.append)
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is set; unset it to publish to the Hub"):
        target.repo_state("tester/Tiny-GGUF")  # the test session runs with HF_HUB_OFFLINE=1
    assert waits == []


def test_error_text_is_redacted_and_one_line() -> None:
    target = HfTarget(endpoint="http://127.0.0.1:9", token="hf_secretvalue123", attempts=1)
    err = target.hub.failure("committing failed", http_error(500, "bad token hf_secretvalue123\nsecond line"))
    assert (
        str(err)
        == "committing failed: HTTP 500: bad token ***; files already uploaded are not sent again when you re-run"
    )
    assert "hf_secretvalue123" not in str(err)
    assert "HTTP 401" in str(target.hub.failure("x failed", http_error(401)))
    assert "write access" in str(target.hub.failure("x failed", http_error(403)))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PUBLISHER_HF_ATTEMPTS", "many", "is not a number"),
        ("PUBLISHER_HF_BACKOFF", "-1", "is negative"),
        ("PUBLISHER_HF_READ_TIMEOUT", "soon", "is not a number"),
        ("PUBLISHER_HF_CONNECT_TIMEOUT", "-5", "is negative"),
    ],
)
def test_retry_settings_from_the_environment_are_checked(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(PublishError, match=f"{name}={value!r} {message}"):
        HfTarget(endpoint="http://127.0.0.1:9", token="hf_x")


def test_retry_settings_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (HfTarget(token="hf_x").hub.attempts, HfTarget(token="hf_x").hub.backoff_s) == (4, 2.0)
    monkeypatch.setenv("PUBLISHER_HF_ATTEMPTS", "2")
    monkeypatch.setenv("PUBLISHER_HF_BACKOFF", "0.25")
    assert (HfTarget(token="hf_x").hub.attempts, HfTarget(token="hf_x").hub.backoff_s) == (2, 0.25)


def test_timeouts_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    target = HfTarget(token="hf_x")
    assert (target.hub.connect_timeout_s, target.hub.read_timeout_s) == (10.0, 60.0)
    monkeypatch.setenv("PUBLISHER_HF_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("PUBLISHER_HF_READ_TIMEOUT", "0.5")
    target = HfTarget(token="hf_x")
    assert (target.hub.connect_timeout_s, target.hub.read_timeout_s) == (2.0, 0.5)
    assert HfTarget(token="hf_x", read_timeout_s=7).hub.read_timeout_s == 7
