"""Model lifecycle on the real server: reloads, keep_alive, disconnects, queueing."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

pytest_plugins = ["tests.fixtures_server"]

MODEL = "gemma3:270m"
pytestmark = pytest.mark.timeout(120)


def gen(http: httpx.Client, **kw: object) -> dict:
    options = {"num_predict": 2, **kw.pop("options", {})}  # type: ignore[dict-item]
    body = {"model": MODEL, "prompt": "Hello", "stream": False, "options": options, **kw}
    r = http.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def loaded_names(http: httpx.Client) -> list[str]:
    return [m["name"] for m in http.get("/api/ps").json()["models"]]


def test_num_ctx_change_reloads_and_shows_in_load_duration(http: httpx.Client) -> None:
    gen(http, options={"num_ctx": 1024})
    same = gen(http, options={"num_ctx": 1024})
    changed = gen(http, options={"num_ctx": 1536})
    assert same["load_duration"] < 20e6  # already loaded: microseconds
    assert changed["load_duration"] > 50e6  # a real reload of the 253 MB model
    assert changed["load_duration"] > 10 * same["load_duration"]
    ctx = {m["name"]: m["context_length"] for m in http.get("/api/ps").json()["models"]}
    assert ctx[MODEL] == 1536


def test_num_thread_change_reloads(http: httpx.Client) -> None:
    gen(http, options={"num_thread": 1})
    again = gen(http, options={"num_thread": 1})
    changed = gen(http, options={"num_thread": 2})
    assert changed["load_duration"] > 10 * again["load_duration"]


def test_keep_alive_zero_unloads_after_the_request(http: httpx.Client) -> None:
    gen(http)
    assert MODEL in loaded_names(http)
    body = gen(http, keep_alive=0)
    assert body["eval_count"] >= 1
    assert MODEL not in loaded_names(http)
    # and the next request loads it again, visibly
    assert gen(http)["load_duration"] > 50e6


@pytest.mark.parametrize("value", ["0", "0s"])
def test_keep_alive_zero_strings(http: httpx.Client, value: str) -> None:
    gen(http, keep_alive=value)
    assert MODEL not in loaded_names(http)


def test_keep_alive_expires_in_background(http: httpx.Client) -> None:
    gen(http, keep_alive="1s")
    assert MODEL in loaded_names(http)
    deadline = time.monotonic() + 10
    while MODEL in loaded_names(http) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert MODEL not in loaded_names(http)


def test_keep_alive_sets_expires_at(http: httpx.Client) -> None:
    gen(http, keep_alive="10m")
    expires = next(m["expires_at"] for m in http.get("/api/ps").json()["models"] if m["name"] == MODEL)
    gen(http, keep_alive=-1)
    forever = next(m["expires_at"] for m in http.get("/api/ps").json()["models"] if m["name"] == MODEL)
    assert expires < forever and forever.startswith("23")
    gen(http)  # back to the default 5m


def test_unload_request_with_empty_prompt(http: httpx.Client) -> None:
    gen(http)
    r = http.post("/api/generate", json={"model": MODEL, "keep_alive": 0, "stream": False})
    assert r.json()["done_reason"] == "unload"
    assert MODEL not in loaded_names(http)


def test_client_disconnect_stops_generation(embedded_server, http: httpx.Client) -> None:
    gen(http)  # loaded
    with httpx.Client(base_url=embedded_server.base_url, timeout=60) as other:
        with other.stream("POST", "/api/generate", json={
            "model": MODEL, "prompt": "Write a very long story.",
            "options": {"num_predict": 2000, "num_ctx": 2048, "temperature": 0.7}}) as r:
            lines = r.iter_lines()
            for _ in range(3):
                next(lines)
        # leaving the block closes the connection mid-stream
    t0 = time.monotonic()
    body = gen(http, options={"num_predict": 1, "num_ctx": 2048})
    waited = time.monotonic() - t0
    assert body["done"] is True
    assert waited < 5.0, f"the model lock was held {waited:.1f}s after the client left"


def test_requests_queue_one_at_a_time(embedded_server) -> None:
    """Two concurrent generations on one model run one after the other (NUM_PARALLEL=1)."""
    results: list[tuple[int, int, dict]] = []

    def one() -> None:
        with httpx.Client(base_url=embedded_server.base_url, timeout=60) as c:
            t0 = time.perf_counter_ns()
            r = c.post("/api/generate", json={"model": MODEL, "prompt": "Hello", "stream": False,
                                              "options": {"num_predict": 16, "temperature": 0}})
            assert r.status_code == 200
            results.append((t0, time.perf_counter_ns(), r.json()))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2

    def engine_ns(body: dict) -> int:   # the server's own time in the engine, without waiting for it
        return body["load_duration"] + body["prompt_eval_duration"] + body["eval_duration"]

    # One after the other: between the first send and the last answer lie both engine times in full.
    # Checked on the stamps received (server durations, client clock), not on a rate: overlapping runs
    # would fit in about one engine time, and a loaded machine only widens the window.
    window = max(end for _, end, _ in results) - min(start for start, _, _ in results)
    assert window >= sum(engine_ns(body) for _, _, body in results), results
