"""eval-generate: prompt records -> one sample record per (prompt, sample index).

    eval-resolve humaneval --limit 4 | eval-generate --model gemma3-270m --max-tokens 64

Every sample has a ``key`` (docs/records.md). Samples already in ``-o OUT`` are
skipped (resume); samples in the shared cache are answered without touching
the model; the rest go to the backend in chunks and are written as they
finish, so output order may differ from input order (sort by ``id`` and
``sample`` when order matters).

A sampled sample gets its own seed, derived from the run seed and its key, so
its text depends on nothing else. Greedy decoding has nothing to draw: one
generation per prompt serves every sample index (a cached sample of the
prompt answers the others), so ``-n 3`` at temperature 0 costs one
generation and gives three identical samples.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson

import llmeval
from llmeval import cli
from llmeval.backends import Backend, Request, Sampling
from llmeval.errors import DataError, StageError, UsageError
from llmeval.models import ModelRef
from llmeval.records import Record, check_fields

PROG = "eval-generate"
EXIT_SOME_FAILED = 3
VLLM_MIN_TEMPERATURE = 0.01  # vllm/sampling_params.py: _MAX_TEMP, the least temperature it keeps

EPILOG = """\
examples:
  eval-resolve humaneval --limit 4 | eval-generate --model gemma3-270m --max-tokens 64 | jq -c
  eval-resolve humaneval | eval-generate --model Qwen/Qwen2.5-7B --preset h100 -n 10 --temperature 0.8 -o gen.jsonl
  eval-resolve gsm8k | eval-generate --backend openai --base-url http://127.0.0.1:8000/v1 --model my-served-model
  eval-generate --model gemma3-270m --preset cpu --print-config

Re-running with the same -o OUT appends only the missing samples; generations
are cached by key in --cache-dir (default $LLMEVAL_CACHE or ~/.cache/llmeval/cache).
Exit status: 0 all samples generated, 1 bad input or backend failure,
2 usage error, 3 finished but some samples carry an "error".
"""


@dataclass(frozen=True)
class Settings:
    temperature: float
    top_p: float
    max_tokens: int
    n: int
    seed: int
    chunk_size: int
    system_prompt: str | None = None  # prepended to chat messages that have no system message


def effective_messages(rec: Record, system_prompt: str | None) -> list[dict[str, Any]] | None:
    """The chat messages the model is given: the record's, behind ``system_prompt`` if it has none."""
    messages = rec.get("messages") or None
    if messages is None or not system_prompt:
        return messages
    if any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def sample_key(
    model: ModelRef, record: Record, settings: Settings, stop: list[str], sample: int
) -> str:
    """The content hash of one generation, exactly as docs/records.md defines it."""
    payload = {
        "v": 1,
        "model_id": model.model_id,
        "model_revision": model.revision,
        "tokenizer": model.tokenizer,
        "prompt": None if record.get("messages") else record.get("prompt"),
        "messages": effective_messages(record, settings.system_prompt),
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_tokens": settings.max_tokens,
        "stop": sorted(stop),
        "seed": settings.seed if settings.temperature > 0 else None,
        "sample": sample,
    }
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def sample_seed(seed: int, key: str) -> int | None:
    """A per-sample seed from the run seed and the key: independent of batching and order."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _check_record(where: str, rec: Record) -> None:
    """Refuse a prompt record eval-generate cannot use, naming the field (docs/records.md)."""
    check_fields(where, rec, optional=("prompt", "messages", "stop", "id", "dataset", "reference"))
    if rec.get("messages") is None and rec.get("prompt") is None:
        raise DataError(where, 'no field "prompt" (a string) or "messages"')


class Tally:
    """Counts for the progress bar, the heartbeat and the closing summary."""

    def __init__(self) -> None:
        self.total = self.done = self.generated = self.cached = self.skipped = self.errors = 0
        self.output_tokens = self.prompt_tokens = 0
        self.datasets: set[str] = set()
        self.engine: dict[str, Any] = {}  # the backend's own figures (phase, queues, KV cache)


def generate(
    numbered: Iterable[tuple[str, Record]],
    backend: Backend,
    settings: Settings,
    *,
    run_id: str,
    preset_name: str,
    cache: Any = None,
    done_keys: set[str] | None = None,
    tally: Tally | None = None,
    on_progress: Callable[[Tally], None] | None = None,
    label: str | None = None,
) -> Iterator[Record]:
    """Map prompt records to sample records (see module docstring).

    ``numbered`` yields ``(where, record)`` pairs, ``where`` being
    ``FILE:LINE`` for error messages. ``done_keys`` are skipped (resume);
    ``cache`` answers known keys and stores new successes. ``label`` names
    the model in the records' ``model`` field (default: the model as given).
    """
    tally = tally or Tally()
    done_keys = done_keys or set()
    model = backend.model
    greedy = settings.temperature == 0
    params_base = {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_tokens": settings.max_tokens,
        "n": settings.n,
        "seed": settings.seed,
    }

    def tick(stats: dict[str, Any]) -> None:
        tally.engine = stats
        if on_progress:
            on_progress(tally)

    backend.on_tick = tick

    def emit(
        rec: Record,
        sample: int,
        key: str,
        completion: str | None,
        finish: str,
        usage: dict[str, Any],
        error: str | None,
        cached: bool,
    ) -> Record:
        out = dict(rec)
        out.update(
            model=label or model.name,
            model_id=model.model_id,
            model_revision=model.revision,
            backend=backend.name,
            preset=preset_name,
            sample=sample,
            params={**params_base, "stop": list(rec.get("stop", []))},
            completion=completion,
            finish_reason=finish,
            usage=usage,
            error=error,
            cached=cached,
            key=key,
            run_id=run_id,
            llmeval_version=llmeval.__version__,
        )
        if settings.system_prompt and rec.get("messages"):
            out["system_prompt"] = settings.system_prompt
        return out

    iterator = iter(numbered)
    while True:
        chunk = list(islice(iterator, settings.chunk_size))
        if not chunk:
            break
        requests: list[Request] = []
        for where, rec in chunk:
            _check_record(where, rec)
            # An empty stop string means nothing (hf never matches it); vLLM refuses it
            # (SamplingParams._verify_args): dropped here, for every backend alike.
            stop = [x for x in rec.get("stop", []) if x]
            keys = [sample_key(model, rec, settings, stop, s) for s in range(settings.n)]
            tally.total += settings.n
            if isinstance(rec.get("dataset"), str):
                tally.datasets.add(rec["dataset"])
            pending: list[int] = []
            hits: dict[int, Record] = {}
            for s, key in enumerate(keys):
                if key in done_keys:
                    tally.skipped += 1
                    tally.done += 1
                    continue
                hit = cache.get(key) if cache is not None else None
                if hit is not None:
                    hits[s] = hit
                else:
                    pending.append(s)
            if greedy and pending and not hits and cache is not None:
                # Another sample index of this greedy prompt may be cached, even one already
                # in OUT: its text is every index's text.
                hit = next(
                    (h for k in keys if k in done_keys and (h := cache.get(k)) is not None), None
                )
                if hit is not None:
                    hits.update({s: hit for s in pending})
                    pending = []
            elif greedy and pending and hits:
                first = next(iter(hits.values()))
                hits.update({s: first for s in pending})
                pending = []
            for s, hit in sorted(hits.items()):
                tally.cached += 1
                tally.done += 1
                if cache is not None and hit.get("key") != keys[s]:
                    # A greedy sibling's text, stored under this index's key for next time.
                    cache.put(keys[s], {k: v for k, v in hit.items() if k not in ("key", "created_at")})
                yield emit(
                    rec,
                    s,
                    keys[s],
                    hit["completion"],
                    hit["finish_reason"],
                    hit.get("usage") or {},
                    None,
                    True,
                )
            if pending:
                requests.append(
                    Request(
                        prompt=rec.get("prompt"),
                        messages=effective_messages(rec, settings.system_prompt),
                        samples=pending,
                        seeds=[
                            None if greedy else sample_seed(settings.seed, keys[s])
                            for s in pending
                        ],
                        sampling=Sampling(
                            settings.temperature, settings.top_p, settings.max_tokens, tuple(stop)
                        ),
                        tag=(rec, keys),
                        reference=rec.get("reference")
                        if isinstance(rec.get("reference"), dict)
                        else None,
                    )
                )
        if on_progress:
            on_progress(tally)
        if not requests:
            continue
        counted: set[tuple[int, str]] = set()  # (request, text) pairs whose tokens are counted
        for c in backend.generate(requests):
            rec, keys = c.request.tag
            key = keys[c.sample]
            usage = {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}
            tally.done += 1
            if c.error:
                tally.errors += 1
            else:
                tally.generated += 1
                # A greedy generation serves several samples: its tokens were made once.
                once = (id(rec), c.text or "")
                if not greedy or once not in counted:
                    counted.add(once)
                    tally.output_tokens += c.completion_tokens or 0
                    tally.prompt_tokens += c.prompt_tokens or 0
                if cache is not None:
                    cache.put(
                        key,
                        {
                            "completion": c.text,
                            "finish_reason": c.finish_reason,
                            "usage": usage,
                            "model_id": model.model_id,
                        },
                    )
            yield emit(rec, c.sample, key, c.text, c.finish_reason, usage, c.error, False)
            if on_progress:
                on_progress(tally)


# ---------------------------------------------------------------------------- command line


class Generate(cli.Command):
    prog = PROG
    description = "Generate completions for prompt records (JSONL in, JSONL out)."
    epilog = EPILOG
    inputs_help = "prompt records (default: stdin; .gz ok)"
    stage = "generate"
    unit = "sample"

    def add_arguments(self, p: cli.Parser) -> None:
        p.add_argument(
            "--model",
            required=True,
            metavar="M",
            help="alias (gemma3-270m), local folder, hub id, or the served model name (openai)",
        )
        p.add_argument(
            "--backend",
            default=None,
            choices=["auto", "vllm", "hf", "openai", "reference"],
            help="generation backend (default: the preset's, else auto)",
        )
        p.add_argument(
            "--preset", default="base", metavar="P", help="preset name or .toml path (default: base)"
        )
        p.add_argument("-n", type=cli.positive_int, dest="n", metavar="N", help="samples per prompt")
        p.add_argument("--temperature", type=cli.nonneg_float, metavar="T", help="0 = greedy")
        p.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling mass")
        p.add_argument(
            "--max-tokens", type=cli.positive_int, metavar="K", help="new tokens per sample"
        )
        p.add_argument(
            "--seed", type=int, metavar="S", help="run seed (per-sample seeds derive from it)"
        )
        p.add_argument(
            "--batch-size", type=cli.positive_int, metavar="B", help="hf: rows per forward pass"
        )
        p.add_argument(
            "--concurrency", type=cli.positive_int, metavar="C", help="openai: requests in flight"
        )
        p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="hf: device")
        p.add_argument(
            "--dtype", choices=["auto", "float16", "bfloat16", "float32"], help="weights dtype"
        )
        p.add_argument(
            "--engine",
            action="append",
            metavar="KEY=VALUE",
            help="engine option, repeatable: an [engine] key (tensor_parallel_size=2), a vllm.LLM "
            "or from_pretrained argument (enforce_eager=true, hf.attn_implementation=sdpa)",
        )
        p.add_argument(
            "--system-prompt",
            metavar="TEXT",
            help="system message for chat records that have none (part of each sample's key)",
        )
        p.add_argument("--revision", metavar="R", help="hub revision of --model")
        p.add_argument(
            "--label",
            metavar="NAME",
            help="name for the records' model field (default: --model), e.g. one model at two settings",
        )
        p.add_argument(
            "--cache-dir", metavar="D", help="shared generation cache (default: $LLMEVAL_CACHE)"
        )
        p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
        p.add_argument(
            "--base-url", metavar="URL", help="openai: server base URL, e.g. http://127.0.0.1:8000/v1"
        )
        p.add_argument(
            "--api-key-env",
            default="OPENAI_API_KEY",
            metavar="VAR",
            help="openai: environment variable holding the API key (default: OPENAI_API_KEY)",
        )
        p.add_argument(
            "--extra-body",
            metavar="JSON",
            help="openai: extra request fields, e.g. '{\"repeat_penalty\": 1.0}'",
        )
        p.add_argument(
            "--loglikelihood",
            action="store_true",
            help="score each choice's continuation by log-likelihood instead of generating "
            "(multiple-choice records; lm-eval's output_type: multiple_choice)",
        )
        p.add_argument(
            "--print-config",
            action="store_true",
            help="print the effective preset as JSON and exit",
        )

    def run(self) -> int:
        from llmeval import backends, presets
        from llmeval.backends import options as engine_options
        from llmeval.cache import GenerationCache
        from llmeval.models import resolve_model

        args = self.args
        preset = presets.load_preset(args.preset)
        preset = presets.apply_overrides(
            preset,
            "sampling",
            n=args.n,
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=args.max_tokens,
            seed=args.seed,
        )
        preset = presets.apply_overrides(
            preset,
            "engine",
            backend=args.backend,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            device=args.device,
            dtype=args.dtype,
        )
        name, note = backends.choose(preset["engine"].get("backend", "auto"), args.base_url)
        preset = engine_options.apply_flags(preset, args.engine, name)
        if args.print_config:
            sys.stdout.buffer.write(orjson.dumps(preset, option=orjson.OPT_INDENT_2) + b"\n")
            return 0
        engine, sampling = preset["engine"], preset["sampling"]
        if name == "vllm" and 0 < sampling["temperature"] < VLLM_MIN_TEMPERATURE:
            # vllm/sampling_params.py, SamplingParams.__post_init__: raised to 0.01 with a
            # log line, so the samples would not be the recorded setting's.
            raise UsageError(
                f"--temperature {sampling['temperature']:g}: vLLM raises temperatures below "
                f"{VLLM_MIN_TEMPERATURE:g} to {VLLM_MIN_TEMPERATURE:g}; use 0 (greedy) or >= "
                f"{VLLM_MIN_TEMPERATURE:g}"
            )
        if note:
            self.log(note)
        engine = {**engine, "backend": name}
        if name == "openai":
            from llmeval.backends.openai import served_model

            model = served_model(args.model, args.base_url)
            engine.update(
                base_url=args.base_url,
                api_key_env=args.api_key_env,
                extra_body=_extra_body(args.extra_body),
            )
        elif name == "reference":
            from llmeval.backends.reference import reference_model

            model = reference_model(args.model)
        else:
            model = resolve_model(args.model, revision=args.revision)
        backend = backends.load_backend_class(name)(model, engine, self.log)
        settings = Settings(
            temperature=sampling["temperature"],
            top_p=sampling["top_p"],
            max_tokens=sampling["max_tokens"],
            n=sampling["n"],
            seed=sampling["seed"],
            chunk_size=int(engine.get("chunk_size") or 1024),
            system_prompt=args.system_prompt or None,
        )
        done_keys = self.done()
        run = self.start_run(
            preset=preset,
            seed=settings.seed,
            extra={
                "backend": backend.describe(),
                "model": {
                    "name": model.name,
                    "model_id": model.model_id,
                    "revision": model.revision,
                    "kind": model.kind,
                },
            },
            info={
                "model": args.label or model.name,
                "backend": name,
                "preset": preset["name"],
            },
        )
        cache = None if args.no_cache else GenerationCache(args.cache_dir)
        tally = Tally()

        def progress(t: Tally) -> None:
            elapsed = max(self.elapsed(), 1e-9)
            self.progress(
                done=t.done,
                total=t.total,
                postfix={
                    "tok_s": f"{t.output_tokens / elapsed:.1f}",
                    "cached": t.cached,
                    "errors": t.errors,
                },
                generated=t.generated,
                cached=t.cached,
                skipped=t.skipped,
                errors=t.errors,
                output_tokens=t.output_tokens,
                prompt_tokens=t.prompt_tokens,
                datasets=sorted(t.datasets)[:20],
                engine=t.engine or None,
            )

        if args.loglikelihood:
            from llmeval.loglikelihood import loglikelihood

            if settings.n > 1:
                self.log("--loglikelihood: one record per prompt (-n does not apply)")

            def fields(rec: Record) -> Record:
                out = {
                    "model": args.label or model.name,
                    "model_id": model.model_id,
                    "model_revision": model.revision,
                    "backend": backend.name,
                    "preset": preset["name"],
                    "run_id": run["run_id"],
                    "llmeval_version": llmeval.__version__,
                }
                if settings.system_prompt and rec.get("messages"):
                    out["system_prompt"] = settings.system_prompt
                return out

            records: Iterator[Record] = loglikelihood(
                self.records(),
                backend,
                fields=fields,
                messages_of=lambda rec: effective_messages(rec, settings.system_prompt),
                chunk_size=settings.chunk_size,
                cache=cache,
                done_keys=done_keys,
                tally=tally,
                on_progress=progress,
            )
        else:
            records = generate(
                self.records(),
                backend,
                settings,
                run_id=run["run_id"],
                preset_name=preset["name"],
                cache=cache,
                done_keys=done_keys,
                tally=tally,
                on_progress=progress,
                label=args.label,
            )
        try:
            for rec in records:
                self.write(rec)
        finally:
            if cache is not None:
                cache.close()
            backend.close()
            progress(tally)
        self.finish(backend_facts=backend.describe())
        elapsed = self.elapsed()
        rate = ""
        if tally.generated and args.loglikelihood:  # scored, not generated: prompt tokens
            rate = f", {tally.prompt_tokens / elapsed:.1f} prompt tokens/s"
        elif tally.generated:
            rate = f", {tally.output_tokens / elapsed:.1f} tokens/s"
        self.log(
            f"{tally.total} samples: {tally.generated} generated, {tally.cached} from cache, "
            f"{tally.skipped} already in output, {tally.errors} errors ({elapsed:.1f} s{rate})"
        )
        if tally.errors:
            self.log(f'{tally.errors} samples failed; their records carry an "error" field')
            return EXIT_SOME_FAILED
        return 0


def main(argv: list[str] | None = None) -> int:
    return Generate().main(argv)


def _extra_body(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise StageError(f"--extra-body: invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise StageError("--extra-body: expected a JSON object")
    return value


if __name__ == "__main__":
    sys.exit(main())
