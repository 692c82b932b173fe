"""Prompt construction for /api/generate and /api/chat.

Why: Ollama applies a model's template to the prompt server-side.  A GGUF that
ships ``tokenizer.chat_template`` (SmolLM2) is rendered with Jinja2 (a
dependency of llama-cpp-python), sandboxed because the template comes from a
file.  Gemma 3 270M's GGUF has none, and llama-cpp-python's fallback gives empty
answers, so Gemma's turn format is applied here by hand.  A model with neither
gets a plain "role: content" transcript.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Sequence

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .models import ModelEntry


class PromptError(ValueError):
    """The request's messages or template cannot be rendered (HTTP 400)."""


def _raise(message: str) -> None:
    raise TemplateError(message)


@lru_cache(maxsize=16)
def _compile(source: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def render_chat(entry: ModelEntry, messages: Sequence[dict[str, Any]]) -> str:
    """Messages -> prompt text ending where the assistant's reply starts."""
    template = entry.chat_template
    if template is not None:
        try:
            return _compile(template).render(
                messages=list(messages),
                add_generation_prompt=True,
                # The vocabulary is not read (large array); BOS is added by the
                # tokenizer when the GGUF asks for it, so templates get ''.
                bos_token="",
                eos_token="",
            )
        except TemplateError as exc:
            raise PromptError(f"chat template failed: {exc}") from exc
    if entry.architecture.startswith("gemma"):
        return _render_gemma(messages)
    return _render_plain(messages)


def _render_gemma(messages: Sequence[dict[str, Any]]) -> str:
    """Gemma's turns; a system message is folded into the first user turn, as Gemma does."""
    parts: list[str] = []
    system = ""
    for msg in messages:
        role, content = msg.get("role", "user"), str(msg.get("content") or "")
        if role == "system":
            system = f"{system}{content}\n\n"
            continue
        if role == "user" and system:
            content, system = system + content, ""
        turn = "model" if role == "assistant" else "user"
        parts.append(f"<start_of_turn>{turn}\n{content}<end_of_turn>\n")
    if system:  # a system message with no user turn after it
        parts.append(f"<start_of_turn>user\n{system.rstrip()}<end_of_turn>\n")
    parts.append("<start_of_turn>model\n")
    return "".join(parts)


def _render_plain(messages: Sequence[dict[str, Any]]) -> str:
    lines = [f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages]
    return "\n".join(lines) + "\nassistant: "


def generate_prompt(
    entry: ModelEntry, prompt: str, system: str | None, template: str | None, raw: bool
) -> str:
    """/api/generate's prompt text.

    raw -> the prompt unchanged.  A request ``template`` -> Ollama's Go-template
    placeholders ``{{ .System }}``/``{{ .Prompt }}`` substituted (other actions are
    dropped; conditionals are not evaluated).  A model with a chat template -> the
    prompt as one user turn (what Ollama does).  Otherwise (Gemma 3 270M is a base
    model) -> plain completion of the prompt, after the system text if given.
    """
    if raw:
        return prompt
    if template:
        return _render_go_lite(template, prompt, system or "")
    if entry.chat_template is not None:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        return render_chat(entry, messages)
    return f"{system}\n\n{prompt}" if system else prompt


_PLACEHOLDER_RE = re.compile(r"\{\{-?\s*(\.[A-Za-z]+)?[^}]*?-?\}\}")


def _render_go_lite(template: str, prompt: str, system: str) -> str:
    """Substitute Ollama's {{ .Prompt }} / {{ .System }}; drop every other action."""
    values = {".Prompt": prompt, ".System": system, ".Response": ""}
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1) or "", ""), template)
