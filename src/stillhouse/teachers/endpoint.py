"""A client for OpenAI-compatible endpoints (vLLM, TGI, llama.cpp server, ``stillhouse llm-serve``).

Two calls are all Stillhouse needs: chat completions (the synthetic-data generator) and legacy completions
with ``echo`` and ``logprobs`` (the verbalizer teacher: the log-probability of a label phrase after a
prompt). Requests are retried with exponential back-off on timeouts, connection errors, 429 and 5xx; other
4xx responses and malformed bodies fail at once with an :class:`EndpointError` naming the URL and the problem.
At most ``concurrency`` requests are in flight, so a shared cluster endpoint is not flooded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

try:  # the `llm` extra's: only a teacher or generator behind an endpoint needs it, and says so when built
    import httpx
except ImportError:  # pragma: no cover - an install without the extra
    httpx = None

from stillhouse.errors import StillhouseError
from stillhouse.spec import EndpointSpec

T = TypeVar("T")
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(StillhouseError):
    """The endpoint could not be reached, refused the request, or answered with something unusable."""


class OpenAIEndpoint:
    """Calls one OpenAI-compatible endpoint; thread-safe (one ``httpx.Client`` shared by worker threads)."""

    def __init__(self, spec: EndpointSpec, backoff_s: float = 0.5):
        self.spec = spec
        self.backoff_s = backoff_s
        if httpx is None:
            raise EndpointError("talking to an OpenAI-compatible endpoint needs httpx", "pip install 'stillhouse[llm]'")
        headers = {}
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise EndpointError(f"environment variable {spec.api_key_env} (endpoint.api_key_env) is not set",
                                    f"export {spec.api_key_env}=<key>, or mount it from a Kubernetes secret")
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=spec.url, headers=headers, timeout=spec.timeout_s)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIEndpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _post(self, path: str, payload: dict) -> dict:
        where = f"{self.spec.url}{path}"
        last = ""
        for attempt in range(self.spec.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.post(path, json=payload)
            except httpx.TimeoutException:
                last = f"no answer within {self.spec.timeout_s:g} s"
                continue
            except httpx.TransportError as exc:
                last = f"cannot connect ({type(exc).__name__})"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise EndpointError(f"{where} refused the request: HTTP {response.status_code}: "
                                    f"{response.text[:200]}", "check endpoint.model, the API key and the URL")
            try:
                return response.json()
            except ValueError:
                raise EndpointError(f"{where} answered with something that is not JSON: {response.text[:120]!r}",
                                    "point endpoint.url at an OpenAI-compatible server (ending in /v1)") from None
        raise EndpointError(f"{where} failed after {self.spec.max_retries + 1} attempt(s): {last}",
                            "check that the endpoint is up; raise endpoint.timeout_s or endpoint.max_retries")

    def chat(self, message: str, *, temperature: float, top_p: float, max_tokens: int, seed: int | None = None) -> str:
        """The assistant's reply to one user message."""
        payload = {"model": self.spec.model, "messages": [{"role": "user", "content": message}],
                   "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        if seed is not None:
            payload["seed"] = seed
        body = self._post("/chat/completions", payload)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise _malformed(self.spec.url, "/chat/completions", "choices[0].message.content", body) from None
        if not isinstance(content, str):
            raise _malformed(self.spec.url, "/chat/completions", "choices[0].message.content", body)
        return content

    def continuation_logprob(self, prompt: str, continuation: str) -> tuple[float, int]:
        """(log P(``continuation`` | ``prompt``), its number of tokens): the echoed prompt's token log-probs from
        where ``continuation`` starts.

        Sends ``prompt + continuation`` with ``echo``, ``logprobs`` and one generated token (some servers
        reject ``max_tokens: 0``); sums the log-probs of tokens whose text offset lies inside the continuation.
        """
        text = prompt + continuation
        body = self._post("/completions", {"model": self.spec.model, "prompt": text, "echo": True, "logprobs": 0,
                                           "max_tokens": 1, "temperature": 0.0})
        try:
            logprobs = body["choices"][0]["logprobs"]
            offsets, values = logprobs["text_offset"], logprobs["token_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise _malformed(self.spec.url, "/completions", "choices[0].logprobs.text_offset/token_logprobs "
                             "(does the server support echo with logprobs?)", body) from None
        picked = [v for offset, v in zip(offsets, values) if len(prompt) <= offset < len(text)]
        if not picked or any(not isinstance(v, (int, float)) for v in picked):
            raise _malformed(self.spec.url, "/completions", "numeric log-probs for the continuation's tokens", body)
        return float(sum(picked)), len(picked)

    def map(self, func: Callable[..., T], items: list) -> list[T]:
        """``[func(item) for item in items]`` with at most ``concurrency`` requests in flight, in input order."""
        with ThreadPoolExecutor(max_workers=self.spec.concurrency) as pool:
            return list(pool.map(func, items))


def _malformed(url: str, path: str, expected: str, body) -> EndpointError:
    return EndpointError(f"{url}{path} answered without {expected}: {str(body)[:160]}",
                         "point endpoint.url at an OpenAI-compatible server (vLLM, TGI, llama.cpp, stillhouse llm-serve)")
