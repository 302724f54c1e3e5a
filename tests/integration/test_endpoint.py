"""The OpenAI-compatible endpoint path, over real HTTP on 127.0.0.1.

``stillhouse llm-serve``'s app (a tiny random Llama) answers correctly; a small misbehaving server (slow,
flaky, refusing, malformed) shows that the client retries what is worth retrying, gives up with a clear
error, and never returns a half-parsed answer.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from stillhouse.serve.local import free_port
from stillhouse.spec import (
    EndpointSpec,
    EndpointTeacherSpec,
    LLMTeacherSpec,
    SynthesisSpec,
)
from stillhouse.teachers.endpoint import EndpointError, OpenAIEndpoint

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def llm_server(tiny_causal_lm_dir):
    import uvicorn

    from stillhouse.teachers.causal_lm import load_causal_lm
    from stillhouse.teachers.openai_server import create_app

    model, tokenizer = load_causal_lm(str(tiny_causal_lm_dir))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(model, tokenizer, "tiny"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


class _Faulty(BaseHTTPRequestHandler):
    """Behaviour chosen by the first path segment: /slow, /flaky, /refuse, /html, /empty, /ok."""

    calls: dict[str, int] = {}
    headers_seen: list[dict] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, body: str, content_type: str = "application/json") -> None:
        payload = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        mode = self.path.split("/")[1]
        _Faulty.calls[mode] = _Faulty.calls.get(mode, 0) + 1
        _Faulty.headers_seen.append(dict(self.headers))
        ok = json.dumps({"choices": [{"message": {"content": "fine"}}]})
        if mode == "slow":
            time.sleep(1.5)
            self._send(200, ok)
        elif mode == "flaky":
            self._send(503, "busy") if _Faulty.calls[mode] <= 2 else self._send(200, ok)
        elif mode == "refuse":
            self._send(400, json.dumps({"error": {"message": "unknown model"}}))
        elif mode == "html":
            self._send(200, "<html>login page</html>", "text/html")
        elif mode == "empty":
            self._send(200, json.dumps({"choices": []}))
        else:
            self._send(200, ok)


@pytest.fixture(scope="module")
def faulty_server():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Faulty)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def client(url: str, **overrides) -> OpenAIEndpoint:
    spec = EndpointSpec(url=url, model="tiny", **{"timeout_s": 0.5, "max_retries": 2, **overrides})
    return OpenAIEndpoint(spec, backoff_s=0.01)


def chat(endpoint: OpenAIEndpoint) -> str:
    return endpoint.chat("hello", temperature=0.5, top_p=1.0, max_tokens=4)


def test_timeouts_are_retried_then_reported(faulty_server):
    _Faulty.calls.clear()
    with pytest.raises(EndpointError) as err:
        chat(client(f"{faulty_server}/slow/v1"))
    assert "failed after 3 attempt(s): no answer within 0.5 s" in str(err.value)
    assert "raise endpoint.timeout_s" in str(err.value)
    assert _Faulty.calls["slow"] == 3


def test_server_errors_are_retried_until_success(faulty_server):
    _Faulty.calls.clear()
    assert chat(client(f"{faulty_server}/flaky/v1")) == "fine"
    assert _Faulty.calls["flaky"] == 3


def test_client_errors_fail_at_once(faulty_server):
    _Faulty.calls.clear()
    with pytest.raises(EndpointError, match="refused the request: HTTP 400"):
        chat(client(f"{faulty_server}/refuse/v1"))
    assert _Faulty.calls["refuse"] == 1


@pytest.mark.parametrize("mode, message", [("html", "is not JSON"), ("empty", "answered without choices")])
def test_malformed_answers_are_clear_errors(faulty_server, mode, message):
    with pytest.raises(EndpointError, match=message):
        chat(client(f"{faulty_server}/{mode}/v1"))


def test_unreachable_endpoint():
    with pytest.raises(EndpointError, match="cannot connect"):
        chat(client(f"http://127.0.0.1:{free_port()}/v1", max_retries=1))


def test_api_key_comes_from_the_named_variable(faulty_server, monkeypatch):
    monkeypatch.delenv("STILLHOUSE_TEST_KEY", raising=False)
    with pytest.raises(EndpointError, match="STILLHOUSE_TEST_KEY .* is not set"):
        client(f"{faulty_server}/ok/v1", api_key_env="STILLHOUSE_TEST_KEY")
    monkeypatch.setenv("STILLHOUSE_TEST_KEY", "s3cret")
    _Faulty.headers_seen.clear()
    assert chat(client(f"{faulty_server}/ok/v1", api_key_env="STILLHOUSE_TEST_KEY")) == "fine"
    assert _Faulty.headers_seen[-1]["Authorization"] == "Bearer s3cret"


def test_concurrency_limit_is_respected(faulty_server):
    endpoint = client(f"{faulty_server}/ok/v1", concurrency=2)
    in_flight, peak, lock = [0], [0], threading.Lock()

    def call(_):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return chat(endpoint)

    assert endpoint.map(call, list(range(8))) == ["fine"] * 8
    assert peak[0] == 2


def test_served_model_chats_and_scores_like_the_local_model(llm_server, tiny_causal_lm_dir, tmp_path):
    from stillhouse.teachers.llm import load_described_teacher, save_prompted_teacher

    endpoint = client(llm_server, timeout_s=30)
    assert isinstance(endpoint.chat("hello", temperature=0.7, top_p=0.9, max_tokens=5, seed=1), str)
    seed = pd.DataFrame({"row_id": ["s1", "s2", "s3", "s4"], "label": ["card_arrival", "card_arrival", "exchange_rate",
                                                                        "exchange_rate"],
                         "text": ["where is my card", "card not here", "what rate", "dollar rate today"]})
    labels = ["card_arrival", "exchange_rate"]
    local_spec = LLMTeacherSpec(kind="llm", model=str(tiny_causal_lm_dir))
    remote_spec = EndpointTeacherSpec(kind="endpoint", endpoint=EndpointSpec(url=llm_server, model="tiny"))
    save_prompted_teacher(local_spec, labels, seed, 0, tmp_path / "local")
    save_prompted_teacher(remote_spec, labels, seed, 0, tmp_path / "remote")
    texts = ["my card is late", "euro rate please"]
    local = load_described_teacher(tmp_path / "local").logits(texts)
    remote = load_described_teacher(tmp_path / "remote").logits(texts)
    assert np.allclose(local, remote, atol=1e-3)


def test_endpoint_generator_writes_rows(llm_server):
    from stillhouse.synth.generate import generate_synthetic

    synthesis = SynthesisSpec(generator="endpoint", per_label=2, max_new_tokens=8,
                              endpoint=EndpointSpec(url=llm_server, model="tiny", timeout_s=30))
    seed = pd.DataFrame({"text": ["where is my card", "card not here", "what rate", "dollar rate today"],
                         "label": ["card", "card", "rate", "rate"]})
    frame, stats = generate_synthetic(synthesis, seed, ["card", "rate"], 0)
    assert list(frame.columns) == ["text", "label", "generator"] and len(frame) == 4
    assert frame["label"].tolist() == ["card", "card", "rate", "rate"] and (frame["generator"] == "endpoint").all()
    assert stats["generated"] == 4 and stats["rows_per_s"] > 0
