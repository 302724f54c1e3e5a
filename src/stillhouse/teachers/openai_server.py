"""A small OpenAI-compatible server for a local Hugging Face causal LM: ``stillhouse llm-serve``.

On a cluster the endpoint is vLLM; on one machine (and in the tests) this serves the same three routes, so the
endpoint generator and teacher run unchanged against either:

- ``GET /v1/models``
- ``POST /v1/chat/completions``: ``messages``, ``temperature``, ``top_p``, ``max_tokens``, ``seed``
- ``POST /v1/completions``: ``prompt``, ``max_tokens``, ``temperature``, ``echo``, ``logprobs`` — with ``echo``
  and ``logprobs`` the prompt's own token log-probabilities and text offsets come back, as in OpenAI's legacy
  API and vLLM (the first token has none).

One request runs at a time (a lock around the model); it is a development server, not a throughput one.
"""

from __future__ import annotations

import threading
import time
import uuid

import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stillhouse.teachers.causal_lm import chat_prompt, load_causal_lm


class _Model:
    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.lock = threading.Lock()

    @torch.inference_mode()
    def token_logprobs(self, ids: list[int]) -> list[float | None]:
        logits = self.model(input_ids=torch.tensor([ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, -1)
        return [None] + [float(logprobs[i - 1, ids[i]]) for i in range(1, len(ids))]

    def offsets(self, ids: list[int]) -> list[int]:
        # Decoding growing prefixes works for every tokenizer (no offset mapping needed); prompts are short.
        return [len(self.tokenizer.decode(ids[:i])) for i in range(len(ids))]

    @torch.inference_mode()
    def generate(self, ids: list[int], max_tokens: int, temperature: float, top_p: float, seed: int | None) -> list[int]:
        if max_tokens <= 0:
            return []
        if seed is not None:
            torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {
            "do_sample": False}
        out = self.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                  max_new_tokens=max_tokens, pad_token_id=self.tokenizer.pad_token_id, **sampling)
        return out[0, len(ids):].tolist()


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)


async def _json(request: Request) -> dict | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def create_app(model, tokenizer, name: str) -> Starlette:
    """The ASGI app serving ``model`` under the model name ``name``."""
    served = _Model(model, tokenizer, name)

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "stillhouse"}]})

    async def chat(request: Request) -> JSONResponse:
        body = await _json(request)
        if body is None or not isinstance(body.get("messages"), list) or not body["messages"]:
            return _error("`messages` must be a non-empty list")
        last = body["messages"][-1]
        if not isinstance(last, dict) or not isinstance(last.get("content"), str):
            return _error("each message needs a string `content`")
        ids = tokenizer(chat_prompt(tokenizer, last["content"]), add_special_tokens=False)["input_ids"]
        with served.lock:
            new = served.generate(ids, int(body.get("max_tokens", 64)), float(body.get("temperature", 1.0)),
                                  float(body.get("top_p", 1.0)), body.get("seed"))
        text = tokenizer.decode(new, skip_special_tokens=True)
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": name, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                        "finish_reason": "length" if len(new) >= int(body.get("max_tokens", 64)) else "stop"}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": len(new), "total_tokens": len(ids) + len(new)},
        })

    async def completions(request: Request) -> JSONResponse:
        body = await _json(request)
        if body is None or not isinstance(body.get("prompt"), str) or not body["prompt"]:
            return _error("`prompt` must be a non-empty string")
        ids = tokenizer(body["prompt"], add_special_tokens=False)["input_ids"]
        with served.lock:
            new = served.generate(ids, int(body.get("max_tokens", 16)), float(body.get("temperature", 1.0)),
                                  float(body.get("top_p", 1.0)), body.get("seed"))
            echo = bool(body.get("echo", False))
            shown = ids + new if echo else new
            logprobs = None
            if body.get("logprobs") is not None:
                values = served.token_logprobs(ids + new)
                offsets = served.offsets(ids + new)
                first = 0 if echo else len(ids)
                base = 0 if echo else len(body["prompt"])
                logprobs = {"tokens": [tokenizer.decode([t]) for t in shown], "token_logprobs": values[first:],
                            "text_offset": [o - base for o in offsets[first:]], "top_logprobs": None}
        return JSONResponse({
            "id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": "text_completion", "created": int(time.time()),
            "model": name, "choices": [{"index": 0, "text": tokenizer.decode(shown), "logprobs": logprobs,
                                        "finish_reason": "length"}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": len(new), "total_tokens": len(ids) + len(new)},
        })

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/completions", completions, methods=["POST"])])


def serve(model_ref: str, host: str = "127.0.0.1", port: int = 8001, gguf_file: str | None = None,
          name: str | None = None) -> None:
    """Load ``model_ref`` and serve it until interrupted."""
    import uvicorn

    model, tokenizer = load_causal_lm(model_ref, gguf_file)
    uvicorn.run(create_app(model, tokenizer, name or model_ref), host=host, port=port, log_level="warning")
