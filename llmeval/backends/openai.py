"""The ``openai`` backend: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, hosted APIs).

Records with ``messages`` go to ``/chat/completions``, the others to
``/completions``. Every sampled sample is its own HTTP request with ``n = 1``
and the sample's own ``seed``, so its text depends only on its key (a request
with ``n = 3`` and one seed makes each draw depend on the others; ``vllm
serve`` derives the i-th choice from seed + i). A greedy prompt is one
request whose text serves every sample index (``vllm serve`` answers
``n > 1`` at temperature 0 with HTTP 400). Requests run
``engine.concurrency`` at a time; 429, 5xx, connection errors and timeouts
are retried with exponential backoff (honouring ``Retry-After``) up to
``engine.max_retries`` times; then the samples become error records. Only
the standard library is used.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import orjson

from llmeval.backends import (
    Backend,
    Completion,
    LoglikRequest,
    LoglikResult,
    Request,
    truncate_at_stop,
)
from llmeval.errors import StageError
from llmeval.models import ModelRef

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
# Answers that say the server does not do what a log-likelihood needs (no /completions,
# echo or logprobs refused): the same for every record, so the run stops with one line.
REFUSAL_STATUS = {400, 404, 405, 422, 501}


class HTTPFailure(Exception):
    def __init__(self, message: str, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def _base(url: str | None) -> str:
    url = url or os.environ.get("OPENAI_BASE_URL")
    if not url:
        raise StageError(
            "the openai backend needs --base-url (or $OPENAI_BASE_URL), e.g. http://127.0.0.1:8000/v1"
        )
    return url.rstrip("/")


def _call(url: str, body: dict[str, Any] | None, key: str | None, timeout: float) -> Any:
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace").strip()
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        try:
            wait_s = float(retry_after) if retry_after else None
        except ValueError:
            wait_s = None
        raise HTTPFailure(
            f"HTTP {exc.code} from {url}: {detail}", exc.code in RETRY_STATUS, wait_s
        ) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HTTPFailure(f"cannot reach {url}: {reason}", True) from None
    except orjson.JSONDecodeError:
        raise HTTPFailure(f"{url} answered with something that is not JSON", True) from None


def served_model(name: str, base_url: str | None, key_env: str = "OPENAI_API_KEY") -> ModelRef:
    """Identify a served model from ``GET /models`` (the entry's fields minus ``created``)."""
    base = _base(base_url)
    try:
        listing = _call(f"{base}/models", None, os.environ.get(key_env), 30)
    except HTTPFailure as exc:
        raise StageError(f"openai backend: {exc}") from None
    entries = [m for m in (listing.get("data") or []) if isinstance(m, dict)]
    entry = next((m for m in entries if m.get("id") == name), None)
    if entry is None and len(entries) == 1:
        entry = entries[0]  # single-model servers (llama.cpp) answer to any name
    ident = {k: v for k, v in (entry or {"id": name}).items() if k not in ("created", "object")}
    rev = (
        "served:"
        + hashlib.sha256(orjson.dumps(ident, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    )
    model_id = f"openai:{base}#{name}"
    return ModelRef(name, "served", model_id, rev, f"{model_id}@{rev}", None)


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.base = _base(self.engine.get("base_url"))
        self.key = os.environ.get(self.engine.get("api_key_env") or "OPENAI_API_KEY")
        self.timeout = float(self.engine.get("request_timeout") or 600)
        retries = self.engine.get("max_retries")
        self.retries = 5 if retries is None else int(retries)
        self.concurrency = int(self.engine.get("concurrency") or 8)
        self.extra = dict(self.engine.get("extra_body") or {})
        self.backoff = float(self.engine.get("backoff_s") or 0.5)
        self.facts.update(
            base_url=self.base, concurrency=self.concurrency, max_retries=self.retries
        )
        self.requests_sent = 0
        self.retried = 0

    def _body(self, req: Request, n: int, seed: int | None) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model.name,
            "max_tokens": req.sampling.max_tokens,
            "temperature": req.sampling.temperature,
            "top_p": req.sampling.top_p,
            "n": n,
        }
        if req.sampling.stop:
            body["stop"] = list(req.sampling.stop)
        if seed is not None:
            body["seed"] = seed
        body.update(self.extra)
        if req.messages is not None:
            body["messages"] = req.messages
            return f"{self.base}/chat/completions", body
        body["prompt"] = req.prompt
        return f"{self.base}/completions", body

    def _post(self, url: str, body: dict[str, Any]) -> Any:
        attempt = 0
        while True:
            self.requests_sent += 1
            try:
                return _call(url, body, self.key, self.timeout)
            except HTTPFailure as exc:
                if not exc.retryable or attempt >= self.retries:
                    suffix = f" (after {attempt} retries)" if attempt else ""
                    raise HTTPFailure(f"{exc}{suffix}", False) from None
                delay = (
                    exc.retry_after
                    if exc.retry_after is not None
                    else min(self.backoff * 2**attempt, 30.0) * (0.5 + random.random())
                )
                attempt += 1
                self.retried += 1
                time.sleep(delay)

    def _one(self, job: tuple[Request, list[int], int | None]) -> list[Completion]:
        """One HTTP request (n = 1): the completion of ``samples`` (one, or every index of a greedy prompt)."""
        req, samples, seed = job
        url, body = self._body(req, 1, seed)
        try:
            reply = self._post(url, body)
        except HTTPFailure as exc:
            return [Completion(req, s, None, "error", None, None, str(exc)) for s in samples]
        choices = [c for c in (reply.get("choices") or []) if isinstance(c, dict)]
        if not choices:
            return [
                Completion(req, s, None, "error", None, None, f"{url}: reply without choices")
                for s in samples
            ]
        usage = reply.get("usage") or {}
        choice = min(choices, key=lambda c: c.get("index", 0))
        if req.messages is not None:
            text = (choice.get("message") or {}).get("content") or ""
        else:
            text = choice.get("text") or ""
        # Servers differ on whether the stop string is included; cut it either way.
        text, _ = truncate_at_stop(text, req.sampling.stop)
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return [
            Completion(
                req, s, text, finish, usage.get("prompt_tokens"), usage.get("completion_tokens")
            )
            for s in samples
        ]

    # ------------------------------------------------------------------ log-likelihood

    def loglikelihood(self, requests: list[LoglikRequest]) -> Iterator[LoglikResult]:
        """Each continuation's log-likelihood from ``/completions`` with ``echo``.

        One request per (prompt, choice): ``prompt`` = context + continuation,
        ``echo: true, logprobs: 1, max_tokens: 1, temperature: 0`` (what
        lm-eval's ``local-completions`` sends: lm_eval/models/openai_completions.py;
        ``max_tokens: 0`` would do, but llama.cpp's server reads 0 as "until
        the context is full"). The continuation's tokens are the echoed ones
        from the one that ends past the context (``text_offset``) to the end of
        the prompt, so a token that straddles the boundary counts with the
        continuation, as lm-eval's split does. A server that cannot do this
        (chat-only, no echo, no logprobs) stops the run with one line: it would
        fail every record the same way. Chat records are errors: the server's
        chat template is not known here, so the context cannot be rebuilt.
        """
        jobs = []
        results: dict[int, LoglikResult] = {}
        for i, req in enumerate(requests):
            if req.messages is not None:
                results[i] = LoglikResult(
                    req, None, None, None, None,
                    "chat records cannot be scored by log-likelihood on the openai backend "
                    "(the server's chat template is unknown here): resolve without --chat",
                )
                continue
            n = len(req.continuations)
            results[i] = LoglikResult(req, [0.0] * n, [0] * n, [False] * n)
            jobs += [(i, j) for j in range(n)]

        def one(job: tuple[int, int]) -> tuple[int, int, tuple[float, int, bool, int] | str]:
            i, j = job
            req = requests[i]
            try:
                return i, j, self._echo_logprob(req.prompt or "", req.continuations[j])
            except HTTPFailure as exc:
                return i, j, str(exc)

        with ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="llmeval-openai"
        ) as pool:
            try:
                answers = list(self._in_order(pool, one, jobs))
            except StageError:
                pool.shutdown(wait=True, cancel_futures=True)  # the rest would be refused too
                raise
            for i, j, got in answers:
                res = results[i]
                if isinstance(got, str):
                    res.error = res.error or got
                elif res.logprobs is not None and res.tokens is not None and res.greedy is not None:
                    res.logprobs[j], res.tokens[j], res.greedy[j], res.prompt_tokens = got
                self.tick({"phase": "log-likelihood"})
        self.facts.update(requests_sent=self.requests_sent, retries=self.retried)
        for i in range(len(requests)):
            res = results[i]
            if res.error:
                res.logprobs = res.tokens = res.greedy = None
            yield res

    def _in_order(self, pool: ThreadPoolExecutor, fn: Any, jobs: list[Any]) -> Iterator[Any]:
        for fut in [pool.submit(fn, job) for job in jobs]:
            yield fut.result()

    def _echo_logprob(self, prompt: str, continuation: str) -> tuple[float, int, bool, int]:
        """(log-likelihood, tokens, greedy, context tokens) of ``continuation`` after ``prompt``."""
        context = prompt.rstrip()
        text = prompt + continuation
        url = f"{self.base}/completions"
        body = {
            "model": self.model.name,
            "prompt": text,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 1,
            **self.extra,
        }
        try:
            reply = self._post(url, body)
        except HTTPFailure as exc:
            status = str(exc).split(" ", 2)[1] if str(exc).startswith("HTTP ") else ""
            code = int(status) if status.isdigit() else 0
            # No such endpoint, or a request refused for its echo / logprobs (a 400 about
            # something else, a prompt too long, stays with its record).
            if code in REFUSAL_STATUS and (
                code not in (400, 422) or any(w in str(exc).lower() for w in ("echo", "logprob"))
            ):
                raise self._cannot(str(exc)) from None
            raise
        choices = [c for c in (reply.get("choices") or []) if isinstance(c, dict)]
        lp = (choices[0].get("logprobs") if choices else None) or {}
        tokens, logprobs = lp.get("tokens"), lp.get("token_logprobs")
        offsets, tops = lp.get("text_offset"), lp.get("top_logprobs") or []
        if not (isinstance(tokens, list) and isinstance(logprobs, list) and isinstance(offsets, list)):
            raise self._cannot("its reply has no logprobs.tokens, token_logprobs and text_offset")
        if not str(choices[0].get("text") or "").startswith(text) or not offsets:
            raise self._cannot("it did not echo the prompt")
        ends = [*offsets[1:], len(text)]
        picked = [
            k for k, (start, end) in enumerate(zip(offsets, ends))
            if end > len(context) and start < len(text)
        ]
        if not picked or any(logprobs[k] is None for k in picked):
            raise self._cannot("it gave no log-probabilities for the echoed prompt tokens")
        total = float(sum(logprobs[k] for k in picked))
        greedy = all(
            isinstance(tops[k] if k < len(tops) else None, dict)
            and logprobs[k] >= max(tops[k].values()) - 1e-6
            for k in picked
        )
        return total, len(picked), greedy, picked[0]

    def _cannot(self, why: str) -> StageError:
        return StageError(
            f"the server at {self.base} cannot score log-likelihoods: {why}; --loglikelihood needs "
            "/completions with echo and logprobs (vLLM's and llama.cpp's servers have them)"
        )

    def _jobs(self, requests: list[Request]) -> Iterator[tuple[Request, list[int], int | None]]:
        for req in requests:
            if req.greedy:
                yield req, list(req.samples), None
            else:
                for s, seed in zip(req.samples, req.seeds):
                    yield req, [s], seed

    def generate(self, requests: list[Request]) -> Iterator[Completion]:
        with ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="llmeval-openai"
        ) as pool:
            pending: set[Future[list[Completion]]] = set()
            queue = self._jobs(requests)
            for job in queue:
                pending.add(pool.submit(self._one, job))
                if len(pending) >= self.concurrency * 2:
                    break
            while pending:
                finished, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield from fut.result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending.add(pool.submit(self._one, nxt))
                if not finished:
                    self.tick({"phase": "waiting for the server", "in_flight": len(pending)})
        self.facts.update(requests_sent=self.requests_sent, retries=self.retried)
