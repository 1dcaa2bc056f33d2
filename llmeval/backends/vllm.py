"""The ``vllm`` backend: vLLM's offline engine (``vllm.LLM``), the H100 path.

Written against vLLM's own source, 0.6 to current (file and function cited
where a rule comes from):

- **Engine settings.** ``vllm.LLM(model, **kwargs)`` with the [engine] keys
  that are vLLM's (dtype, gpu_memory_utilization, max_num_seqs,
  max_num_batched_tokens, enable_prefix_caching, tensor_parallel_size,
  max_model_len) and every ``[engine.vllm]`` option (any ``EngineArgs``
  field; ``--engine KEY=VALUE``). A hub model is loaded at the commit its key
  names (``revision`` and ``tokenizer_revision``).
- **Prompts as token ids.** Every prompt goes in as a ``TokensPrompt``
  (``{"prompt_token_ids": [...]}``, vllm/inputs/data.py) built by
  :func:`~llmeval.backends.prompt_token_ids`: chat templates rendered and
  encoded without special tokens (as ``LLM.chat`` does), so a template that
  writes its own BOS does not get a second one; the hf backend feeds the same ids.
- **One request per sample.** ``SamplingParams(n=1, seed=<the sample's
  seed>)``: a sample's text depends only on its key, not on how many samples
  were pending (with ``n > 1`` and one seed, vLLM derives the i-th draw from
  the request's seed: vllm/v1/engine/parallel_sampling.py,
  ``ParentRequest._get_child_sampling_params``, seed + index; V0 drew all n
  from one generator). vLLM batches the requests anyway, and prefix caching
  shares their prompt.
- **Greedy once.** A greedy prompt is one request whose text serves every
  sample index: vLLM refuses ``n > 1`` at temperature 0
  (vllm/sampling_params.py, ``SamplingParams._verify_greedy_sampling``;
  ``best_of`` in 0.6).
- **Progress.** The engine is driven request by request:
  ``llm.llm_engine.add_request`` for every pending sample, then ``step()``
  until none is unfinished (what ``LLM._run_engine`` does inside
  ``LLM.generate``), so every finished request is written at once, the
  heartbeat carries the engine's own figures (requests running and waiting,
  KV-cache use, from ``LLM.get_metrics`` on V1 or the V0 scheduler), and all
  pending requests stay in the engine together. An engine without that API
  falls back to one ``LLM.generate`` call per chunk.
- **Failures.** A prompt vLLM refuses (too long, bad token) is an error
  record. If a step raises, the requests still in flight are aborted and run
  one at a time, so the failure stays with the request that caused it;
  outputs are matched by request id (or prompt ids), never by position, so
  leftovers of a failed call (vLLM <= 0.9 kept the requests a failed
  ``LLM.generate`` had already added) cannot be taken for ours. An engine
  that died (``EngineDeadError``) stops the run with one line.
- **stdout.** vLLM logs to stdout by default (``VLLM_LOGGING_STREAM``); while
  it loads, stdout is pointed at stderr (the file descriptor too, for its
  worker processes) so stdout carries only JSONL.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from llmeval.backends import (
    Backend,
    Completion,
    LoglikRequest,
    LoglikResult,
    PromptError,
    Request,
    check_length,
    continuation_token_ids,
    failed,
    prompt_token_ids,
)
from llmeval.backends.options import vllm_kwargs
from llmeval.errors import StageError, missing_dependency
from llmeval.models import materialize

_ids = itertools.count()


@dataclass
class _Job:
    """One engine request: the Request it serves, the sample indices its text fills, its inputs."""

    req: Request
    samples: list[int]
    prompt_ids: list[int]
    params: Any


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Point stdout (the Python object and file descriptor 1) at stderr for the duration.

    vLLM's logger writes to ``sys.stdout`` unless ``VLLM_LOGGING_STREAM`` says
    otherwise, and the worker processes it starts inherit descriptor 1: either
    would put log lines into eval-generate's JSONL.
    """
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    sys.stdout.flush()
    saved_fd = os.dup(1)
    saved = sys.stdout
    try:
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        yield
    finally:
        try:
            sys.stderr.flush()
        finally:
            sys.stdout = saved
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._llm: Any = None
        self._engine: Any = None
        try:
            self.facts["vllm"] = metadata.version("vllm")
        except metadata.PackageNotFoundError:
            self.facts["vllm"] = None

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM`` (model excluded), from the effective [engine] table."""
        args = vllm_kwargs(self.engine)
        if self.model.kind == "hub":
            args["revision"] = self.model.revision
            args.setdefault("tokenizer_revision", self.model.revision)
        # LLM() turns stats off unless told (vllm/entrypoints/llm.py, LLM.__init__); they feed
        # LLM.get_metrics(), i.e. the heartbeat's KV-cache use and queue lengths.
        args.setdefault("disable_log_stats", False)
        return args

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        if self._llm is not None:
            return
        args = self.engine_args()
        t0 = time.monotonic()
        with self.keepalive("loading"), stdout_to_stderr():
            try:
                import vllm
            except ImportError:
                raise missing_dependency("vllm", "vllm") from None
            try:
                self._llm = vllm.LLM(model=materialize(self.model), **args)
            except TypeError as exc:  # an option this vLLM does not have
                raise StageError(f"vLLM refused the engine settings: {exc}") from None
            except Exception as exc:  # config checks, CUDA out of memory, a missing model...
                raise StageError(
                    f"vLLM could not load {self.model.name!r}: {type(exc).__name__}: {exc}"
                ) from None
        self._vllm = vllm
        self._tok = self._llm.get_tokenizer()
        engine = getattr(self._llm, "llm_engine", None)
        config = getattr(engine, "model_config", None)
        self._max_len = int(
            getattr(config, "max_model_len", 0) or args.get("max_model_len") or 1 << 30
        )
        self._engine = engine
        self._stepwise = all(
            callable(getattr(engine, a, None))
            for a in ("add_request", "step", "has_unfinished_requests", "abort_request")
        )
        kind = getattr(getattr(vllm, "sampling_params", None), "RequestOutputKind", None)
        self._final_only = getattr(kind, "FINAL_ONLY", None)
        self.facts.update(
            engine_args=args,
            max_model_len=self._max_len,
            stepwise=self._stepwise,
            load_s=round(time.monotonic() - t0, 2),
        )
        self.log(f"vllm: loaded {self.model.name} in {self.facts['load_s']} s with {args}")

    # ------------------------------------------------------------------ requests

    def _params(self, req: Request, seed: int | None) -> Any:
        s = req.sampling
        params = self._vllm.SamplingParams(
            n=1,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            stop=list(s.stop) or None,
            seed=seed if s.temperature > 0 else None,
        )
        if self._final_only is not None:
            # Only the final output of each request: what LLM.generate asks for
            # (vllm/entrypoints/llm.py, LLM._validate_and_add_requests). Without it
            # step() also returns running requests, which are skipped below.
            try:
                params.output_kind = self._final_only
            except (AttributeError, TypeError):
                pass
        return params

    def _jobs(self, requests: list[Request]) -> Iterator[Completion | _Job]:
        """Error completions for prompts vLLM cannot take, and the jobs for the rest."""
        for req in requests:
            try:
                ids = prompt_token_ids(self._tok, req)
                check_length(ids, req.sampling.max_tokens, self._max_len)
            except PromptError as exc:
                yield from failed(req, str(exc), exc.prompt_tokens)
                continue
            pairs = [(list(req.samples), None)] if req.greedy else [
                ([s], seed) for s, seed in zip(req.samples, req.seeds)
            ]
            for samples, seed in pairs:
                try:
                    params = self._params(req, seed)
                except Exception as exc:  # SamplingParams' own checks (VLLMValidationError)
                    yield from failed(
                        Request(req.prompt, req.messages, samples, [seed], req.sampling, req.tag),
                        f"vLLM refused the sampling settings: {exc}",
                        len(ids),
                    )
                    continue
                yield _Job(req, samples, ids, params)

    def generate(self, requests: list[Request]) -> Iterator[Completion]:
        self._load()
        jobs: list[_Job] = []
        for item in self._jobs(requests):
            if isinstance(item, _Job):
                jobs.append(item)
            else:
                yield item
        if not jobs:
            return
        if self._stepwise:
            yield from self._run_stepwise(jobs)
        else:
            yield from self._run_batched(jobs)

    # ------------------------------------------------------------------ the engine, step by step

    def _add(self, rid: str, job: _Job) -> None:
        self._engine.add_request(rid, {"prompt_token_ids": job.prompt_ids}, job.params)

    def _run_stepwise(self, jobs: list[_Job]) -> Iterator[Completion]:
        engine = self._engine
        inflight: dict[str, _Job] = {}
        for job in jobs:
            rid = f"llmeval-{next(_ids)}"
            try:
                self._add(rid, job)
            except Exception as exc:  # the engine's own input checks (length, vocabulary)
                self._dead_check(exc)
                yield from self._failed(job, f"vLLM refused the request: {type(exc).__name__}: {exc}")
                continue
            inflight[rid] = job
            self.tick(lambda: self._stats(inflight, "adding requests"))
        while inflight:
            try:
                outputs = engine.step()
            except Exception as exc:
                yield from self._isolate(inflight, exc)
                return
            for out in outputs:
                if not getattr(out, "finished", False):
                    continue
                done = self._match(out, inflight)
                if done is not None:
                    yield from self._completions(inflight.pop(done), out)
            self.tick(lambda: self._stats(inflight, "generating"))
            if inflight and not engine.has_unfinished_requests():
                for job in inflight.values():  # should not happen; never loop forever
                    yield from self._failed(job, "vLLM finished without an output for this request")
                inflight.clear()

    def _match(self, out: Any, inflight: dict[str, _Job]) -> str | None:
        rid = str(getattr(out, "request_id", ""))
        if rid in inflight:
            return rid
        # Newer vLLM may suffix the id it was given; never match a stranger by position.
        return next((k for k in inflight if rid.startswith(k + "-")), None)

    def _isolate(self, inflight: dict[str, _Job], exc: Exception) -> Iterator[Completion]:
        """A step raised: abort what is in flight and run it again, together, then by halves
        when a step fails again (:meth:`_retry`)."""
        self._dead_check(exc)
        self.log(
            f"vllm: a step failed ({type(exc).__name__}: {exc}); "
            f"retrying its {len(inflight)} requests, halving the set on each failure"
        )
        try:
            self._engine.abort_request(list(inflight))
        except Exception as abort_exc:
            self._dead_check(abort_exc)
        yield from self._retry(list(inflight.values()))

    def _retry(self, jobs: list[_Job]) -> Iterator[Completion]:
        """Run ``jobs`` in the engine at once; if a step fails, keep what finished and retry
        the rest in two halves. A request that fails alone is an error record, and one bad
        request costs a few rounds (log2 of the batch), not the batch's throughput."""
        pending = {f"llmeval-{next(_ids)}": job for job in jobs}
        try:
            for rid, job in list(pending.items()):
                self._add(rid, job)
            while pending:
                finished = []
                for o in self._engine.step():
                    done = self._match(o, pending) if getattr(o, "finished", False) else None
                    if done is not None:
                        finished.append((pending.pop(done), o))
                for job, o in finished:
                    yield from self._completions(job, o)
                self.tick({"phase": "retrying after a failed step", "unfinished": len(pending)})
                if pending and not self._engine.has_unfinished_requests():
                    raise RuntimeError("vLLM finished without an output for this request")
        except Exception as exc:
            self._dead_check(exc)
            try:
                self._engine.abort_request(list(pending))
            except Exception:
                pass
            left = list(pending.values())
            if len(left) == 1:
                yield from self._failed(
                    left[0], f"vLLM generate failed: {type(exc).__name__}: {exc}"
                )
            elif left:
                half = len(left) // 2
                yield from self._retry(left[:half])
                yield from self._retry(left[half:])

    def _dead_check(self, exc: Exception) -> None:
        if type(exc).__name__ == "EngineDeadError":
            raise StageError(
                f"the vLLM engine died ({exc}); run the same command again to resume"
            ) from None

    # ------------------------------------------------------------------ fallback: LLM.generate

    def _run_batched(self, jobs: list[_Job]) -> Iterator[Completion]:
        """For an engine without add_request/step: one LLM.generate call, isolated on failure."""
        prompts = [{"prompt_token_ids": j.prompt_ids} for j in jobs]
        try:
            with self.keepalive("generating"):
                outputs = self._llm.generate(prompts, [j.params for j in jobs], use_tqdm=False)
        except Exception as exc:
            self._dead_check(exc)
            for job in jobs:
                try:
                    with self.keepalive("isolating a failure"):
                        outs = self._llm.generate(
                            [{"prompt_token_ids": job.prompt_ids}], [job.params], use_tqdm=False
                        )
                    # Leftover requests of the failed call may come back too: take ours.
                    mine = [o for o in outs if list(o.prompt_token_ids or []) == job.prompt_ids]
                    if not mine:
                        raise RuntimeError("no output for the prompt")
                except Exception as one_exc:
                    self._dead_check(one_exc)
                    yield from self._failed(
                        job, f"vLLM generate failed: {type(one_exc).__name__}: {one_exc}"
                    )
                else:
                    yield from self._completions(job, mine[-1])
            return
        if len(outputs) != len(jobs):
            raise StageError(f"vLLM returned {len(outputs)} outputs for {len(jobs)} prompts")
        for job, out in zip(jobs, outputs):
            yield from self._completions(job, out)

    # ------------------------------------------------------------------ log-likelihood

    # One alternative per position beside the prompt token: its rank says whether the
    # continuation is greedy. vLLM refuses more than EngineArgs.max_logprobs (20 by default;
    # vllm/v1/engine/processor.py, Processor._validate_logprobs), and lm-eval asks for 1 too
    # (lm_eval/models/vllm_causallms.py, VLLM._loglikelihood_tokens).
    PROMPT_LOGPROBS = 1

    def loglikelihood(self, requests: list[LoglikRequest]) -> Iterator[LoglikResult]:
        """Each continuation's log-likelihood from vLLM's prompt logprobs.

        One request per (prompt, choice): ``TokensPrompt`` of context +
        continuation ids (split as lm-eval splits them), ``SamplingParams(
        max_tokens=1, temperature=0, prompt_logprobs=1, detokenize=False)``.
        ``RequestOutput.prompt_logprobs`` holds one entry per prompt token:
        None for the first, then a dict ``{token_id: Logprob}`` with the prompt
        token's own entry (vllm/outputs.py; vllm/v1/engine/logprobs.py,
        ``LogprobsProcessor._update_prompt_logprobs``). The continuation's
        log-likelihood is the sum of its tokens' entries; it is greedy when each
        has rank 1. (vLLM V1 does not read the prefix cache for requests that
        want prompt logprobs: vllm/v1/core/kv_cache_manager.py,
        ``KVCacheManager.get_computed_blocks``.)
        """
        self._load()
        jobs: list[tuple[int, int, list[int], int]] = []  # request, choice, prompt ids, context length
        results: dict[int, LoglikResult] = {}
        for i, req in enumerate(requests):
            try:
                context, conts = continuation_token_ids(self._tok, req)
                check_length(context + max(conts, key=len), 1, self._max_len)
            except PromptError as exc:
                results[i] = LoglikResult(req, None, None, None, exc.prompt_tokens, str(exc))
                continue
            results[i] = LoglikResult(req, [0.0] * len(conts), [len(c) for c in conts],
                                      [False] * len(conts), len(context))
            jobs += [(i, j, context + cont, len(context)) for j, cont in enumerate(conts)]
        try:
            params = self._vllm.SamplingParams(
                max_tokens=1, temperature=0.0, prompt_logprobs=self.PROMPT_LOGPROBS, detokenize=False
            )
        except Exception as exc:
            raise StageError(f"vLLM refused the log-likelihood settings: {exc}") from None
        outputs: list[Any] | None = None
        if jobs:
            try:
                with self.keepalive("log-likelihood"):
                    outputs = self._llm.generate(
                        [{"prompt_token_ids": ids} for _, _, ids, _ in jobs], params, use_tqdm=False
                    )
                if len(outputs) != len(jobs):
                    raise RuntimeError(f"{len(outputs)} outputs for {len(jobs)} prompts")
            except Exception as exc:
                self._dead_check(exc)
                outputs = None
        for n, (i, j, ids, ctx_len) in enumerate(jobs):
            res = results[i]
            if res.error:
                continue
            try:
                if outputs is not None:
                    out = outputs[n]
                else:  # the batch failed: this prompt alone, so the failure stays with its request
                    with self.keepalive("isolating a failure"):
                        outs = self._llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)
                    out = next(o for o in outs if list(o.prompt_token_ids or []) == ids)
                res.logprobs[j], res.greedy[j] = _continuation_logprob(out, ids, ctx_len)  # type: ignore[index]
            except Exception as exc:
                self._dead_check(exc)
                res.error = f"vLLM log-likelihood failed: {type(exc).__name__}: {exc}"
        for i in range(len(requests)):
            res = results[i]
            if res.error:
                res.logprobs = res.tokens = res.greedy = None
            yield res

    # ------------------------------------------------------------------ outputs and figures

    def _failed(self, job: _Job, error: str) -> Iterator[Completion]:
        for s in job.samples:
            yield Completion(job.req, s, None, "error", len(job.prompt_ids), None, error)

    def _completions(self, job: _Job, out: Any) -> Iterator[Completion]:
        choices = list(getattr(out, "outputs", None) or [])
        if not choices:
            yield from self._failed(job, "vLLM returned no output for this request")
            return
        choice = choices[0]
        finish = getattr(choice, "finish_reason", None)
        if finish not in ("stop", "length"):
            reason = "still running" if finish is None else str(finish)
            yield from self._failed(job, f"vLLM ended the request without a result ({reason})")
            return
        prompt_ids = getattr(out, "prompt_token_ids", None)
        prompt_tokens = len(prompt_ids) if prompt_ids is not None else len(job.prompt_ids)
        tokens = len(choice.token_ids) if getattr(choice, "token_ids", None) is not None else None
        for s in job.samples:
            yield Completion(job.req, s, choice.text, finish, prompt_tokens, tokens)

    def _stats(self, inflight: dict[str, _Job], phase: str) -> dict[str, Any]:
        """The engine's own figures for the heartbeat, where this vLLM exposes them."""
        stats: dict[str, Any] = {"phase": phase, "in_flight": len(inflight)}
        engine = self._engine
        stats["unfinished"] = _quiet(lambda: int(engine.get_num_unfinished_requests()))
        metrics = _quiet(lambda: list(self._llm.get_metrics()))  # V1, with stats on
        if metrics:
            by_name = {getattr(m, "name", None): getattr(m, "value", None) for m in metrics}
            stats["running"] = _num(by_name.get("vllm:num_requests_running"))
            stats["waiting"] = _num(by_name.get("vllm:num_requests_waiting"))
            usage = by_name.get("vllm:kv_cache_usage_perc", by_name.get("vllm:gpu_cache_usage_perc"))
            stats["kv_cache_usage"] = _num(usage)
            hits, queries = by_name.get("vllm:prefix_cache_hits"), by_name.get("vllm:prefix_cache_queries")
            if isinstance(hits, (int, float)) and isinstance(queries, (int, float)) and queries > 0:
                stats["prefix_cache_hit_rate"] = round(hits / queries, 4)
        else:  # V0: the scheduler's queues and the block manager
            sched = _quiet(lambda: engine.scheduler[0])
            if sched is not None:
                stats["running"] = _quiet(lambda: len(sched.running))
                stats["waiting"] = _quiet(lambda: len(sched.waiting))
                total = _quiet(lambda: engine.cache_config.num_gpu_blocks)
                free = _quiet(lambda: sched.block_manager.get_num_free_gpu_blocks())
                if isinstance(total, int) and total > 0 and isinstance(free, int):
                    stats["kv_cache_usage"] = round(1 - free / total, 4)
        return {k: v for k, v in stats.items() if v is not None}

    def close(self) -> None:
        self._llm = None
        self._engine = None


def _continuation_logprob(out: Any, ids: list[int], ctx_len: int) -> tuple[float, bool]:
    """Sum of the prompt logprobs of ``ids[ctx_len:]``, and whether each was the argmax."""
    if list(out.prompt_token_ids or []) != ids:
        raise RuntimeError("the output is for another prompt")
    entries = out.prompt_logprobs
    if entries is None or len(entries) != len(ids):
        raise RuntimeError("no prompt logprobs in the output")
    total, greedy = 0.0, True
    for pos in range(ctx_len, len(ids)):
        entry = entries[pos]
        if entry is None or ids[pos] not in entry:
            raise RuntimeError(f"no logprob for prompt token {pos}")
        lp = entry[ids[pos]]
        value = float(getattr(lp, "logprob", lp))  # a Logprob; a float in some releases
        total += value
        rank = getattr(lp, "rank", None)
        if rank is not None:
            greedy = greedy and rank == 1
        else:
            greedy = greedy and value >= max(float(getattr(v, "logprob", v)) for v in entry.values())
    return total, greedy


def _quiet(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # a figure this vLLM does not expose
        return None


def _num(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return round(value, 4) if isinstance(value, float) else value
