"""Ollama's own API: the NDJSON stream format and the inventory client asked before measuring.

Why together: both are the Ollama wire protocol (``/api/generate|chat`` streamed as one JSON
object per line; ``/api/version``, ``/api/show``, ``/api/tags``, ``/api/ps``), spoken by a real
Ollama and by our embedded server alike.  The measured streams go through the format-neutral
:class:`~sweep.backends.http.StreamClient`; :class:`OllamaClient` answers the questions asked
once before measuring, on httpx (sync).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sweep.backends.http import error_text, tls_context
from sweep.backends.stream import NS_PER_MS, LineKind, StreamFormat, loads
from sweep.cells import Cell, ConfigError
from sweep.config import Endpoint

if TYPE_CHECKING:
    import httpx


class OllamaClient:
    """Talks to one server.  ``stall_timeout_s`` is the longest silence tolerated."""

    def __init__(self, base_url: str, *, connect_timeout_s: float = 10.0,
                 stall_timeout_s: float = 120.0, headers: dict[str, str] | None = None) -> None:
        import httpx  # lazily: httpx (with its CLI's rich/click/pygments) costs ~0.3 s to import

        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=_timeout(connect_timeout_s, stall_timeout_s),
                                  verify=tls_context(),
                                  headers=headers or {})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ inventory
    def version(self) -> str:
        """The server's version; a clear :class:`ConfigError` if it cannot be reached."""
        import httpx  # lazily, as in __init__

        try:
            response = self._http.get("/api/version")
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"cannot reach the server at {self.base_url} ({type(exc).__name__}): "
                "start it ('ollama serve') or set OLLAMA_HOST / backend.base_url"
            ) from None
        if response.status_code != 200:
            raise ConfigError(f"{self.base_url}/api/version answered HTTP {response.status_code}: "
                              f"is this an Ollama server? ({error_text(response.content)})")
        return str(response.json().get("version", "unknown"))

    def show(self, model: str, *, missing_hint: str | None = None) -> dict[str, Any]:
        """``/api/show`` for a model; a clear :class:`ConfigError` if it is missing."""
        import httpx  # lazily, as in __init__

        try:
            response = self._http.post("/api/show", json={"model": model})
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach the server at {self.base_url} ({type(exc).__name__})") from None
        if response.status_code == 404:
            hint = missing_hint or f"run 'ollama pull {model}'"
            raise ConfigError(f"model '{model}' is not on {self.base_url}: {hint}")
        if response.status_code != 200:
            raise ConfigError(f"/api/show for '{model}' failed with HTTP {response.status_code}: {error_text(response.content)}")
        return response.json()

    def tags(self) -> list[dict[str, Any]]:
        return self._http.get("/api/tags").json().get("models", [])

    def ps(self) -> list[dict[str, Any]]:
        return self._http.get("/api/ps").json().get("models", [])


def _timeout(connect_timeout_s: float, stall_timeout_s: float) -> httpx.Timeout:
    """``read`` is the longest silence between two byte arrivals: a stall."""
    import httpx  # lazily, as in OllamaClient.__init__

    return httpx.Timeout(connect=connect_timeout_s, read=stall_timeout_s, write=stall_timeout_s,
                         pool=connect_timeout_s)


def request_body(cell: Cell, prompt: str, *, stream: bool = True) -> dict[str, Any]:
    """The JSON body Ollama expects; only set options are sent."""
    body: dict[str, Any] = {"model": cell.model, "stream": stream}
    extra = cell.lengths.options if cell.lengths is not None else {}
    if cell.options or extra:
        body["options"] = {**cell.options, **extra}
    if cell.lengths is not None:
        body.update(cell.lengths.body)   # raw, cache_prompt (sweep/plan.py decides them per backend kind)
    if cell.keep_alive is not None:
        ka = cell.keep_alive
        body["keep_alive"] = int(ka) if str(ka).lstrip("-").isdigit() else ka
    if cell.endpoint == Endpoint.chat:
        messages = [{"role": "system", "content": cell.system}] if cell.system else []
        messages.append({"role": "user", "content": prompt})
        body["messages"] = messages
    else:
        body["prompt"] = prompt
        if cell.system:
            body["system"] = cell.system
    return body


def _ns_to_ms(value: Any) -> float | None:
    return value / NS_PER_MS if isinstance(value, (int, float)) else None


class OllamaNDJSON(StreamFormat):
    """Ollama's ``/api/generate`` and ``/api/chat``: one JSON object per line, ``done: true`` last."""

    name = "ollama"

    def request(self, cell: Cell, prompt: str) -> tuple[str, dict[str, Any]]:
        return f"/api/{cell.endpoint}", request_body(cell, prompt)

    def interpret(self, line: bytes | str) -> tuple[LineKind, Any]:
        if not line or line.isspace():
            return LineKind.SKIP, None
        obj = loads(line)
        if not isinstance(obj, dict):
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
            return LineKind.BAD, f"malformed NDJSON line: {text[:200]!r}"
        if "error" in obj:
            return LineKind.ERROR, str(obj["error"])
        if obj.get("done") is True:
            return LineKind.FINAL, obj
        message = obj.get("message")
        text = message.get("content", "") if isinstance(message, dict) else obj.get("response", "")
        return LineKind.CONTENT, text if isinstance(text, str) else ""

    def server_fields(self, final: dict[str, Any] | None, metas: Sequence[Any]) -> dict[str, Any]:
        final = final or {}
        fields = {
            "load_duration_ms": _ns_to_ms(final.get("load_duration")),
            "prompt_eval_duration_ms": _ns_to_ms(final.get("prompt_eval_duration")),
            "eval_duration_ms": _ns_to_ms(final.get("eval_duration")),
            "total_duration_ms": _ns_to_ms(final.get("total_duration")),
            "prompt_eval_count": final.get("prompt_eval_count"),
            "eval_count": final.get("eval_count"),
            "done_reason": final.get("done_reason"),
        }
        if fields["eval_count"] and final.get("eval_duration"):
            fields["throughput_tok_s"] = fields["eval_count"] / (final["eval_duration"] / 1e9)
        return fields

    def final_text(self, final: dict[str, Any]) -> str:
        message = final.get("message")
        text = final.get("response") or (message.get("content") if isinstance(message, dict) else "") or ""
        return text if isinstance(text, str) else ""


OLLAMA = OllamaNDJSON()
