"""The openai backend: against llama.cpp's real OpenAI-compatible server, and a scripted one for retries."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from conftest import BIN, require_in_ci, run_cmd

from llmeval.backends.openai import OpenAIBackend, served_model
from llmeval.generate import Settings, generate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(gguf_path):
    require_in_ci("llama_cpp")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            "2",
            "--n_ctx",
            "2048",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/models", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("llama.cpp server did not start")
            time.sleep(0.3)
    yield base
    proc.terminate()  # by PID: the server process itself, no wrapper shell
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
def test_real_server_n_samples_per_prompt(llama_server, tmp_path):
    cmd = (
        f"{sys.executable} {BIN}/eval-resolve humaneval --limit 2 | "
        f"{sys.executable} {BIN}/eval-generate --backend openai --base-url {llama_server} --model gemma "
        f"-n 3 --temperature 0.8 --max-tokens 16 --extra-body '{{\"repeat_penalty\": 1.0}}' "
        f"-o {tmp_path}/gen.jsonl"
    )
    out = subprocess.run(
        cmd,
        shell=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "LLMEVAL_CACHE": str(tmp_path / "cache")},
    )
    assert out.returncode == 0, out.stderr.decode()
    recs = [orjson.loads(x) for x in (tmp_path / "gen.jsonl").read_bytes().splitlines()]
    assert len(recs) == 6
    by_id: dict[str, list] = {}
    for r in recs:
        by_id.setdefault(r["id"], []).append(r)
    assert set(by_id) == {"humaneval/HumanEval/0", "humaneval/HumanEval/1"}
    for samples in by_id.values():
        assert sorted(r["sample"] for r in samples) == [0, 1, 2]
        assert len({r["key"] for r in samples}) == 3
        assert all(isinstance(r["completion"], str) for r in samples)
        assert all(
            r["backend"] == "openai" and r["model_id"].startswith("openai:http://127.0.0.1")
            for r in samples
        )
        # Per-sample seeds: three different draws.
        assert len({r["completion"] for r in samples}) >= 2
    # One request per sample (n = 1, the sample's own seed).
    metrics = json.loads((tmp_path / "gen.jsonl.metrics.json").read_text())
    assert metrics["backend_facts"]["requests_sent"] == 6


@pytest.mark.slow
def test_real_server_greedy_is_repeatable_and_stops(llama_server, tmp_path):
    model = served_model("gemma", llama_server)
    be = OpenAIBackend(
        model, {"base_url": llama_server, "extra_body": {"repeat_penalty": 1.0}}, lambda m: None
    )
    recs = [
        (f"t:{i}", {"id": f"x/{i}", "prompt": p, "stop": ["\n"]})
        for i, p in enumerate(["The capital of France is", "def add(a, b):\n    return"])
    ]
    s = Settings(0.0, 1.0, 12, 1, 1, 8)
    a = sorted(generate(recs, be, s, run_id="r", preset_name="base"), key=lambda r: r["id"])
    b = sorted(generate(recs, be, s, run_id="r", preset_name="base"), key=lambda r: r["id"])
    assert [r["completion"] for r in a] == [r["completion"] for r in b]
    assert all("\n" not in r["completion"] for r in a)
    assert all(r["usage"]["prompt_tokens"] > 3 for r in a)


class Scripted(BaseHTTPRequestHandler):
    """Answers POSTs from a script of (status, body) pairs; GET /models lists one model."""

    script: list = []
    seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b'{"object": "list", "data": [{"id": "m", "object": "model", "created": 1, "owned_by": "me"}]}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        Scripted.seen.append(json.loads(self.rfile.read(length)))
        status, body = Scripted.script.pop(0) if Scripted.script else (200, None)
        if body is None:
            n = Scripted.seen[-1]["n"]
            body = {
                "choices": [
                    {"index": i, "text": f"ok{i}", "finish_reason": "length"} for i in range(n)
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 7},
            }
        data = json.dumps(body).encode()
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Scripted.script, Scripted.seen = [], []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_retries_on_429_and_5xx_then_succeeds(scripted):
    Scripted.script = [(429, {"error": "slow down"}), (503, {"error": "busy"})]
    be = OpenAIBackend(
        served_model("m", scripted), {"base_url": scripted, "backoff_s": 0.01}, lambda m: None
    )
    recs = [("t:1", {"id": "a", "prompt": "hi", "stop": []})]
    (rec,) = generate(recs, be, Settings(0.0, 1.0, 8, 1, 1, 8), run_id="r", preset_name="base")
    assert rec["error"] is None and rec["completion"] == "ok0" and rec["finish_reason"] == "length"
    assert rec["usage"] == {"prompt_tokens": 5, "completion_tokens": 7}
    assert len(Scripted.seen) == 3 and be.retried == 2
    assert Scripted.seen[0]["prompt"] == "hi" and Scripted.seen[0]["max_tokens"] == 8


def test_client_error_is_a_record_not_retried(scripted):
    Scripted.script = [(400, {"error": "context length exceeded"})]
    be = OpenAIBackend(
        served_model("m", scripted), {"base_url": scripted, "backoff_s": 0.01}, lambda m: None
    )
    recs = [
        ("t:1", {"id": "a", "prompt": "x", "stop": []}),
        ("t:2", {"id": "b", "prompt": "y", "stop": []}),
    ]
    out = {
        r["id"]: r
        for r in generate(recs, be, Settings(0.0, 1.0, 8, 1, 1, 8), run_id="r", preset_name="base")
    }
    errors = [r for r in out.values() if r["error"]]
    assert len(errors) == 1 and errors[0]["error"].startswith("HTTP 400 from")
    assert "context length exceeded" in errors[0]["error"]
    assert len(Scripted.seen) == 2


def test_retries_exhausted_become_error_records(scripted):
    Scripted.script = [(500, {"e": 1})] * 3
    be = OpenAIBackend(
        served_model("m", scripted),
        {"base_url": scripted, "backoff_s": 0.001, "max_retries": 2},
        lambda m: None,
    )
    (rec,) = generate(
        [("t:1", {"id": "a", "prompt": "x"})],
        be,
        Settings(0.0, 1.0, 8, 1, 1, 8),
        run_id="r",
        preset_name="base",
    )
    assert rec["error"].endswith("(after 2 retries)") and rec["completion"] is None


def test_each_sample_is_its_own_request_with_its_own_seed(scripted):
    """n = 1 per request and the sample's seed: its text cannot depend on the other samples."""
    from llmeval.generate import sample_key, sample_seed

    one = {
        "choices": [{"index": 0, "text": "only", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1},
    }
    Scripted.script = [(200, one)] * 3
    model = served_model("m", scripted)
    be = OpenAIBackend(model, {"base_url": scripted}, lambda m: None)
    rec = {"id": "a", "prompt": "x"}
    settings = Settings(0.5, 1.0, 8, 3, 1, 8)
    out = list(generate([("t:1", rec)], be, settings, run_id="r", preset_name="base"))
    assert sorted(r["sample"] for r in out) == [0, 1, 2]
    assert [s["n"] for s in Scripted.seen] == [1, 1, 1]
    expected = {sample_seed(1, sample_key(model, rec, settings, [], s)) for s in range(3)}
    assert {s["seed"] for s in Scripted.seen} == expected and len(expected) == 3
    assert all(r["usage"] == {"prompt_tokens": 2, "completion_tokens": 1} for r in out)


def test_greedy_samples_are_one_request(scripted):
    """vllm serve answers n > 1 at temperature 0 with HTTP 400: greedy is asked once, n = 1."""
    Scripted.script = [
        (200, {"choices": [{"index": 0, "text": "same", "finish_reason": "length"}], "usage": {}})
    ]
    be = OpenAIBackend(served_model("m", scripted), {"base_url": scripted}, lambda m: None)
    out = list(
        generate(
            [("t:1", {"id": "a", "prompt": "x"})],
            be,
            Settings(0.0, 1.0, 8, 3, 1, 8),
            run_id="r",
            preset_name="base",
        )
    )
    assert sorted((r["sample"], r["completion"]) for r in out) == [(0, "same"), (1, "same"), (2, "same")]
    assert len(Scripted.seen) == 1 and Scripted.seen[0]["n"] == 1 and "seed" not in Scripted.seen[0]
    assert len({r["key"] for r in out}) == 3 and not any(r["error"] for r in out)


def test_chat_messages_use_chat_endpoint(scripted):
    chat = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    Scripted.script = [(200, chat)]
    be = OpenAIBackend(served_model("m", scripted), {"base_url": scripted}, lambda m: None)
    (rec,) = generate(
        [("t:1", {"id": "a", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]})],
        be,
        Settings(0.0, 1.0, 8, 1, 1, 8),
        run_id="r",
        preset_name="base",
    )
    assert rec["completion"] == "hello"
    assert (
        Scripted.seen[0]["messages"] == [{"role": "user", "content": "hi"}]
        and "prompt" not in Scripted.seen[0]
    )


def test_unreachable_server_is_one_line():
    port = free_port()
    from conftest import run_cmd

    out = run_cmd(
        [
            "eval-generate",
            "--backend",
            "openai",
            "--base-url",
            f"http://127.0.0.1:{port}/v1",
            "--model",
            "m",
        ],
        input=b"",
    )
    assert out.returncode == 1
    assert out.stderr.decode().startswith(
        f"eval-generate: error: openai backend: cannot reach http://127.0.0.1:{port}/v1/models"
    )


# ---------------------------------------------------------------------------- log-likelihood


def _loglik(base, recs, **engine):
    from llmeval.loglikelihood import loglikelihood

    be = OpenAIBackend(
        served_model("m", base), {"base_url": base, "backoff_s": 0.01, **engine}, lambda m: None
    )
    numbered = [(f"t:{i + 1}", r) for i, r in enumerate(recs)]
    return list(loglikelihood(numbered, be, fields=lambda r: {}, messages_of=lambda r: r.get("messages")))


MC = {"id": "q", "prompt": "Is the sky blue? Answer:", "reference": {"label": "A", "continuations": [" yes", " no"]}}


def _echo(prompt, tokens, logprobs, top):
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {
        "choices": [
            {
                "index": 0,
                "text": prompt + "!",
                "logprobs": {"tokens": tokens, "token_logprobs": logprobs, "text_offset": offsets, "top_logprobs": top},
                "finish_reason": "length",
            }
        ]
    }


def test_loglikelihood_reads_the_echoed_continuation_tokens(scripted):
    p = MC["prompt"]
    # " yes" as two tokens, the second straddling nothing; " no" as one; then the generated "!".
    Scripted.script = [
        (200, _echo(p + " yes", ["Is", " the sky blue? Answer", ":", " y", "es", "!"],
                    [None, -1.0, -0.5, -2.0, -0.25, -3.0], [None, {}, {}, {" y": -2.0}, {"es": -0.25}, {}])),
        (200, _echo(p + " no", ["Is", " the sky blue? Answer", ":", " no", "!"],
                    [None, -1.0, -0.5, -1.5, -3.0], [None, {}, {}, {" maybe": -0.1}, {}])),
    ]
    (rec,) = _loglik(scripted, [MC], concurrency=1)
    assert rec["error"] is None
    assert rec["choice_logprobs"] == [-2.25, -1.5] and rec["choice_tokens"] == [2, 1]
    assert rec["choice_greedy"] == [True, False]
    first = Scripted.seen[0]
    assert first["prompt"] == p + " yes" and first["echo"] is True and first["logprobs"] == 1
    assert first["max_tokens"] == 1 and first["temperature"] == 0


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ([(404, {"detail": "Not Found"})] * 2, 'HTTP 404 from {base}/completions: {{"detail": "Not Found"}}'),
        ([(400, {"error": "echo is not supported with logprobs"})] * 2,
         'HTTP 400 from {base}/completions: {{"error": "echo is not supported with logprobs"}}'),
        ([(200, {"choices": [{"index": 0, "text": "!", "logprobs": None}]})] * 2,
         "its reply has no logprobs.tokens, token_logprobs and text_offset"),
        ([(200, _echo("", ["!"], [-1.0], [{}]))] * 2, "it did not echo the prompt"),
    ],
)
def test_a_server_that_cannot_echo_logprobs_is_one_line(scripted, tmp_path, script, why):
    Scripted.script = list(script)
    src = tmp_path / "p.jsonl"
    src.write_bytes(orjson.dumps(MC) + b"\n")
    out = run_cmd(
        ["eval-generate", str(src), "--backend", "openai", "--base-url", scripted, "--model", "m",
         "--loglikelihood", "--concurrency", "1", "--no-cache"]
    )
    assert out.returncode == 1
    assert out.stderr.decode().strip().splitlines()[-1] == (
        f"eval-generate: error: the server at {scripted} cannot score log-likelihoods: "
        + why.format(base=scripted)
        + "; --loglikelihood needs /completions with echo and logprobs (vLLM's and llama.cpp's "
        "servers have them)"
    )
    assert out.stdout == b""


def test_a_400_about_the_prompt_stays_with_its_record(scripted):
    Scripted.script = [(400, {"error": "context length exceeded"})] * 2
    (rec,) = _loglik(scripted, [MC], concurrency=1)
    assert rec["error"].startswith("HTTP 400 from") and rec["choice_logprobs"] is None


@pytest.mark.slow
def test_real_server_loglikelihood(llama_server):
    """llama.cpp's server echoes prompt logprobs (it reads max_tokens 0 as "no limit", so 1 is
    sent). Each echoed position costs it a sort of the whole vocabulary in Python: short prompts."""
    (rec,) = _loglik(llama_server, [MC], concurrency=1)
    assert rec["error"] is None and rec["choice_tokens"] == [1, 1]
    # The same number straight from the server: the last echoed token of prompt + " no".
    body = {"prompt": MC["prompt"] + " no", "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
    req = urllib.request.Request(
        f"{llama_server}/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    lp = json.loads(urllib.request.urlopen(req, timeout=300).read())["choices"][0]["logprobs"]
    no = lp["text_offset"].index(len(MC["prompt"]))
    assert rec["choice_logprobs"][1] == pytest.approx(lp["token_logprobs"][no], abs=1e-6)
    assert all(x < 0 for x in rec["choice_logprobs"])
