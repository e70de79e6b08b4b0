"""An annotator backed by any OpenAI-compatible chat endpoint (OpenAI, Gemini, vLLM, Ollama, ...).

`OpenAIAgent.annotate` renders the clip (`prompts.build_messages`), asks the endpoint and
turns the answer into an `Annotation`. Every outcome is recorded, never raised:

- OK: a JSON answer (structured outputs, JSON mode, or JSON/prose in plain mode) was parsed;
  a label outside the space is left as given so `finalise` marks the answer INVALID.
- INVALID: no usable JSON after tolerant parsing and ONE repair request (the bad answer is
  sent back with a request for valid JSON); an answer cut at max_tokens that cannot be
  repaired; an answer over MAX_ANSWER_BYTES (stored truncated).
- REFUSED: `message.refusal` is set, or the text is a refusal ("I can't help with that").
- ERROR: no answer: the API key variable is unset, a 4xx other than 429, or 429/5xx/timeouts
  after `endpoint.max_retries` retries (the openai client's own retries are off, so every
  request sent is counted here).

Limits per endpoint: at most `max_concurrency` requests in flight (optionally also a gate
shared by several agents), `requests_per_minute` and `tokens_per_minute` over a sliding
60 s window (tokens estimated before the call, corrected with `usage` after).

Tokens come from `usage`; `cost_usd` is the money this run spent (tokens x the endpoint's
price per million): an answer served from the cache (`cached=True`) keeps its token counts
but costs 0. `latency_s` is this run's wall time for the clip, retries and waits included.
The API key is read from the environment variable the endpoint names, only when a request
must be sent; it is never stored, logged or part of a cache key, and any text stored on the
annotation is scrubbed of it.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from merforge.agents.evidence import ClipEvidence, detect_injection, serialise
from merforge.agents.labels import LabelSpace
from merforge.agents.llm_cache import LLMCache, request_key
from merforge.agents.prompts import (
    PROMPT_VERSION,
    Demonstration,
    DemonstrationSelector,
    Embedder,
    PromptError,
    build_messages,
    load_pool,
    repair_prompt,
    response_format,
)
from merforge.agents.rationale import extract_label, extract_steps
from merforge.storage.config import AnnotateConfig, EndpointConfig
from merforge.storage.records import Annotation, AnnotationStatus, EvidenceItem, annotation_id

MAX_ANSWER_BYTES = 100_000  # longer answers are INVALID (a runaway generation, not an annotation)
MAX_RAW_CHARS = 20_000  # raw_response kept on the annotation
MAX_RETRY_AFTER_S = 60.0  # a server asking for longer waits is capped to this
IMAGE_TOKENS = 765  # OpenAI's cost of a 512x512-tiled image at detail "auto", an upper-end estimate
AUDIO_TOKENS_PER_S = 10

_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry|unfortunately)?[,.!\s]*(?:but\s+)?(?:as an ai[^,]*,\s*)?"
    r"i\s+(?:can(?:no|')?t|cannot|am unable to|am not able to|won'?t|will not|must decline to)\s+"
    r"(?:help|assist|comply|provide|do that|annotate|analy[sz]e|classify|fulfil|process|label)",
    re.IGNORECASE)


# -- tolerant JSON ----------------------------------------------------------------------


class AnswerParseError(ValueError):
    """An answer that no repair turns into a JSON object."""


def _close_truncated(text: str) -> str:
    """Close the strings, arrays and objects a truncated JSON text left open."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]" and stack:
            stack.pop()
    closed = text + ('"' if in_string else "")
    closed = re.sub(r"[,:\s]+$", "", closed)
    closed = re.sub(r',?\s*"[^"]*"$', "", closed) if closed.endswith('"') and re.search(r'[{,]\s*"[^"]*"$', closed) \
        else closed  # a dangling key without a value
    return closed + "".join(reversed(stack))


def _loads_variants(text: str) -> Any:
    """json.loads, then with common slips fixed: trailing commas, single quotes, Python literals."""
    attempts = [text]
    no_trailing = re.sub(r",\s*([}\]])", r"\1", text)
    attempts.append(no_trailing)
    pythonic = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", no_trailing)))
    attempts.append(pythonic)
    for candidate in attempts:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    try:  # single-quoted keys and strings: a Python literal
        value = ast.literal_eval(no_trailing)
        if isinstance(value, (dict, list)):
            return value
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if "'" in pythonic and '"' not in pythonic:
        try:
            return json.loads(pythonic.replace("'", '"'))
        except json.JSONDecodeError:
            pass
    raise AnswerParseError("not valid JSON")


def parse_json_answer(text: str) -> dict:
    """The JSON object in a model's answer, tolerating code fences, prose around it, trailing
    commas, single quotes, Python literals and truncation. Raises AnswerParseError."""
    if not text or not text.strip():
        raise AnswerParseError("empty answer")
    fenced = re.search(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", text, re.DOTALL)
    body = fenced.group(1) if fenced and "{" in fenced.group(1) else text
    start = body.find("{")
    if start < 0:
        raise AnswerParseError("no JSON object in the answer")
    body = body[start:]
    end = body.rfind("}")
    candidates = [body[: end + 1]] if end >= 0 else []
    candidates.append(_close_truncated(body))
    # A truncated answer may end inside a value: cut back to the last complete member.
    for cut in list(re.finditer(r",\s*\"", body))[::-1][:20]:
        candidates.append(_close_truncated(body[: cut.start()]))
    for candidate in candidates:
        try:
            value = _loads_variants(candidate)
        except AnswerParseError:
            continue
        if isinstance(value, dict):
            return value
    raise AnswerParseError("no valid JSON object in the answer")


# -- limits -----------------------------------------------------------------------------


class RateLimiter:
    """Requests and tokens per minute over a sliding 60 s window.

    `acquire(tokens)` waits until one more request with `tokens` fits; a request larger than
    the whole token budget waits for an empty window. `settle` corrects the estimate with the
    tokens the endpoint reported. No locks: the check and the booking run without an await
    between them, so tasks of one event loop cannot interleave there.
    """

    WINDOW_S = 60.0

    def __init__(self, requests_per_minute: int, tokens_per_minute: int):
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self._booked: deque[list[float]] = deque()  # [time, tokens]

    async def acquire(self, tokens: int) -> list[float]:
        tokens = min(int(tokens), self.tpm)
        while True:
            now = time.monotonic()
            while self._booked and self._booked[0][0] <= now - self.WINDOW_S:
                self._booked.popleft()
            used = sum(entry[1] for entry in self._booked)
            if len(self._booked) < self.rpm and used + tokens <= self.tpm:
                booking = [now, float(tokens)]
                self._booked.append(booking)
                return booking
            # The oldest booking leaves the window then; each pass frees at least one.
            await asyncio.sleep(max(0.005, self._booked[0][0] + self.WINDOW_S - now))

    @staticmethod
    def settle(booking: list[float], tokens: int) -> None:
        booking[1] = float(tokens)


def estimate_tokens(messages: list[dict], max_tokens: int) -> int:
    """Rough request size for the token budget: ~4 characters a token, images and audio
    at flat rates, plus the answer's max_tokens (OpenAI counts those against the limit too)."""
    total = 0
    for message in messages:
        content = message["content"]
        for part in content if isinstance(content, list) else [{"type": "text", "text": content}]:
            if part["type"] == "text":
                total += len(part["text"]) // 4 + 1
            elif part["type"] == "image_url":
                total += IMAGE_TOKENS
            elif part["type"] == "input_audio":
                total += int(len(part["input_audio"]["data"]) * 3 / 4 / 32_000 * AUDIO_TOKENS_PER_S) + 1
        total += 4
    return total + max_tokens


# -- the agent --------------------------------------------------------------------------


class EndpointFailure(Exception):
    """No answer from the endpoint (recorded as an ERROR annotation)."""


@dataclass
class Exchange:
    """One answered request: the raw body and what it cost."""

    body: str
    tokens_in: int
    tokens_out: int
    cached: bool
    requests: int  # HTTP requests sent for it (0 when cached)


@dataclass
class _Reading:
    """What one answer says: fields for the annotation, or why it is not usable."""

    status: AnnotationStatus
    content: str
    fields: dict[str, Any]
    reason: str = ""
    retry_with_repair: bool = False


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN -> None


_MODALITIES = {"text": "text", "transcript": "text", "speech": "text", "words": "text", "language": "text",
               "audio": "audio", "prosody": "audio", "voice": "audio", "acoustic": "audio",
               "visual": "visual", "video": "visual", "face": "visual", "image": "visual", "au": "visual"}


def _text_of(content: Any) -> str:
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


class ChatClient:
    """Requests to one OpenAI-compatible endpoint with the cache, retries and limits above.

    Shared by every caller of an endpoint (the annotator agent, the LLM judge): `send`
    answers from the cache when it can, else sends the request under the endpoint's
    concurrency, rate and token limits, retrying 429/5xx/timeouts with backoff, and stores
    the answer. Raises EndpointFailure when no answer comes. `request_gate`: an optional
    semaphore shared with other clients. `backoff_s`: the first retry delay when the server
    gives no retry-after; it doubles per retry (with jitter), capped at 30 s.
    """

    def __init__(self, endpoint: EndpointConfig, cache_dir: Path, *,
                 request_gate: asyncio.Semaphore | None = None, backoff_s: float = 1.0):
        self.endpoint = endpoint
        self.cache = LLMCache(Path(cache_dir))
        self.backoff_s = backoff_s
        self.request_gate = request_gate
        self.limiter = RateLimiter(endpoint.requests_per_minute, endpoint.tokens_per_minute)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._gate: asyncio.Semaphore | None = None
        self.requests_sent = 0  # HTTP requests, retries and repairs included

    # -- per event loop: the HTTP client and the semaphore belong to the loop that made them

    def _bind(self, api_key: str) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None:
            self._client = openai.AsyncOpenAI(api_key=api_key, base_url=self.endpoint.base_url,
                                              timeout=self.endpoint.timeout, max_retries=0)
            self._gate = asyncio.Semaphore(self.endpoint.max_concurrency)
            self._loop = loop
        return self._client, self._gate  # type: ignore[return-value]

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = None

    def redact(self, text: str) -> str:
        """`text` with the endpoint's API key replaced by [redacted]."""
        key = os.environ.get(self.endpoint.api_key_env, "")
        return text.replace(key, "[redacted]") if len(key) >= 4 else text

    def request(self, messages: list[dict], response_format: dict | None) -> dict[str, Any]:
        """The canonical request: what the cache key covers (no API key in it)."""
        request: dict[str, Any] = {"base_url": self.endpoint.base_url, "model": self.endpoint.model,
                                   "messages": messages, "temperature": self.endpoint.temperature,
                                   "max_tokens": self.endpoint.max_tokens}
        if response_format is not None:
            request["response_format"] = response_format
        return request

    def _retry_delay(self, attempt: int, headers: Any = None) -> float:
        if headers is not None:
            for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
                value = _number(headers.get(name))
                if value is not None and value >= 0:
                    return min(value / divisor, MAX_RETRY_AFTER_S)
        return min(30.0, self.backoff_s * 2 ** attempt) * random.uniform(0.8, 1.2)

    async def send(self, request: dict[str, Any]) -> Exchange:
        key = request_key(request)
        hit = self.cache.get(key)
        if hit is not None:
            return Exchange(hit.body, int(hit.usage.get("prompt_tokens", 0)),
                            int(hit.usage.get("completion_tokens", 0)), cached=True, requests=0)
        api_key = os.environ.get(self.endpoint.api_key_env, "")
        if not api_key:
            raise EndpointFailure(f"environment variable {self.endpoint.api_key_env} is not set; export the API key "
                                  f"for endpoint {self.endpoint.name!r} ({self.endpoint.base_url}) in it")
        client, gate = self._bind(api_key)
        params = {k: v for k, v in request.items() if k != "base_url"}
        estimate = estimate_tokens(request["messages"], self.endpoint.max_tokens)
        sent = 0
        last_problem = ""
        for attempt in range(self.endpoint.max_retries + 1):
            booking = await self.limiter.acquire(estimate)
            delay: float | None = None
            async with gate:
                if self.request_gate is not None:
                    await self.request_gate.acquire()
                started = time.monotonic()
                sent += 1
                self.requests_sent += 1
                try:
                    raw = await client.chat.completions.with_raw_response.create(**params)
                    body = raw.text
                except openai.RateLimitError as error:
                    last_problem = f"HTTP 429 rate limited: {error.message}"
                    delay = self._retry_delay(attempt, error.response.headers)
                except openai.APIStatusError as error:
                    last_problem = f"HTTP {error.status_code}: {error.message}"
                    if error.status_code < 500 and error.status_code not in (408, 409):
                        raise EndpointFailure(self.redact(last_problem)[:500]) from None
                    delay = self._retry_delay(attempt, error.response.headers)
                except openai.APITimeoutError:
                    last_problem = f"no answer within {self.endpoint.timeout:g} s (timeout)"
                    delay = self._retry_delay(attempt)
                except openai.APIConnectionError as error:
                    last_problem = f"connection failed: {error}"
                    delay = self._retry_delay(attempt)
                finally:
                    if self.request_gate is not None:
                        self.request_gate.release()
            if delay is None:
                usage = _usage(body)
                RateLimiter.settle(booking, usage[0] + usage[1] or estimate)
                self.cache.put(key, body, {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
                               time.monotonic() - started)
                return Exchange(body, usage[0], usage[1], cached=False, requests=sent)
            if attempt < self.endpoint.max_retries:
                await asyncio.sleep(delay)
        raise EndpointFailure(self.redact(f"gave up after {sent} request(s): {last_problem}")[:500])


def completion_message(body: str) -> tuple[str, str, str]:
    """(content, finish_reason, refusal) of a chat completion body. Raises ValueError when
    the body is not a chat completion (no choices[0].message)."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        message = choice.get("message") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ValueError("the endpoint's response is not a chat completion (no choices[0].message)") from None
    return _text_of(message.get("content")), choice.get("finish_reason") or "", str(message.get("refusal") or "")


class OpenAIAgent:
    """An AnnotatorAgent for one OpenAI-compatible endpoint.

    `few_shot_pool`: demonstrations (a list, or a JSONL path); default: the
    `annotate_config.few_shot_pool` file when `annotate_config.few_shot` > 0.
    `request_gate`, `backoff_s`: see `ChatClient`.
    """

    def __init__(self, endpoint: EndpointConfig, cache_dir: Path,
                 few_shot_pool: Sequence[Demonstration] | Path | str | None = None,
                 annotate_config: AnnotateConfig | None = None, *,
                 embedder: Embedder | None = None, request_gate: asyncio.Semaphore | None = None,
                 backoff_s: float = 1.0):
        self.endpoint = endpoint
        self.id = endpoint.name
        self.cost_rank = endpoint.cost_rank
        self.config = annotate_config or AnnotateConfig()
        self.client = ChatClient(endpoint, Path(cache_dir), request_gate=request_gate, backoff_s=backoff_s)
        if few_shot_pool is None and self.config.few_shot and self.config.few_shot_pool:
            few_shot_pool = self.config.few_shot_pool
        pool = load_pool(Path(few_shot_pool)) if isinstance(few_shot_pool, (str, Path)) else list(few_shot_pool or [])
        self.selector = DemonstrationSelector(pool, embed=embedder)
        self._select_lock = threading.Lock()

    @property
    def requests_sent(self) -> int:
        """HTTP requests, retries and repairs included."""
        return self.client.requests_sent

    async def aclose(self) -> None:
        await self.client.aclose()

    def _redact(self, text: str) -> str:
        return self.client.redact(text)

    def _request(self, messages: list[dict], space: LabelSpace) -> dict[str, Any]:
        return self.client.request(messages, response_format(self.endpoint, space))

    async def _send(self, request: dict[str, Any]) -> Exchange:
        return await self.client.send(request)

    # -- reading answers

    def _read(self, exchange: Exchange, evidence: ClipEvidence, space: LabelSpace, repaired: bool) -> _Reading:
        try:
            content, finish, refusal = completion_message(exchange.body)
        except ValueError as problem:
            return _Reading(AnnotationStatus.ERROR, exchange.body[:2000], {}, str(problem))
        if refusal:
            return _Reading(AnnotationStatus.REFUSED, content or refusal, {}, f"the model refused: {refusal[:300]}")
        size = len(content.encode("utf-8"))
        if size > MAX_ANSWER_BYTES:
            kept = content[:2000] + f"\n... [truncated: the answer was {size} bytes]"
            return _Reading(AnnotationStatus.INVALID, kept, {},
                            f"answer of {size} bytes exceeds the {MAX_ANSWER_BYTES}-byte limit")
        try:
            answer = parse_json_answer(content)
            if not isinstance(answer.get("label"), str) or not answer["label"].strip():
                raise AnswerParseError("the JSON object has no \"label\"")
        except AnswerParseError as problem:
            if _REFUSAL.search(content[:300]):
                return _Reading(AnnotationStatus.REFUSED, content, {}, f"the model refused: {content[:200]}")
            if finish == "length":
                return _Reading(AnnotationStatus.INVALID, content, {},
                                f"answer cut off at max_tokens={self.endpoint.max_tokens} (finish_reason length) "
                                f"and not repairable ({problem}); raise max_tokens for endpoint {self.id!r}")
            label = extract_label(content, space) if self.endpoint.response_format == "none" else None
            if label:  # a prose answer: the label it settled on, its reasoning as steps
                return _Reading(AnnotationStatus.OK, content,
                                {"label": label, "labels": (label,), "steps": extract_steps(content, label, space)})
            reason = f"answer is not valid JSON ({problem})"
            if repaired:
                reason += " after one repair request"
            return _Reading(AnnotationStatus.INVALID, content, {}, reason, retry_with_repair=not repaired)
        fields = self._fields(answer, evidence, space)
        reason = "answer cut off at max_tokens (finish_reason length); repaired" if finish == "length" else ""
        return _Reading(AnnotationStatus.OK, content, fields, reason)

    def _fields(self, answer: dict, evidence: ClipEvidence, space: LabelSpace) -> dict[str, Any]:
        label = answer["label"].strip()
        labels = answer.get("labels") or []
        labels = [labels] if isinstance(labels, str) else [str(x) for x in labels if isinstance(x, (str, int))]
        probabilities: dict[str, float] = {}
        raw_probabilities = answer.get("label_probabilities") or {}
        if isinstance(raw_probabilities, list):  # [{"label": .., "probability": ..}, ...]
            raw_probabilities = {str(p.get("label")): p.get("probability", p.get("p"))
                                 for p in raw_probabilities if isinstance(p, dict)}
        if isinstance(raw_probabilities, dict):
            for name, value in raw_probabilities.items():
                if (number := _number(value)) is not None:
                    probabilities[str(name)] = number
        steps_value = answer.get("steps")
        if isinstance(steps_value, list) and steps_value:
            steps = tuple(str(s.get("text", s.get("step", s)) if isinstance(s, dict) else s) for s in steps_value)
        elif isinstance(steps_value, str) and steps_value.strip():
            steps = extract_steps(steps_value)
        else:
            prose = next((answer[k] for k in ("reasoning", "rationale", "explanation", "thoughts")
                          if isinstance(answer.get(k), str)), "")
            steps = extract_steps(prose) if prose else ()
        items = []
        for item in answer.get("evidence") or []:
            if not isinstance(item, dict):
                continue
            modality = _MODALITIES.get(str(item.get("modality", "")).lower().strip())
            start, end = _number(item.get("start")), _number(item.get("end"))
            if modality is None or start is None:
                continue
            end = start if end is None else end
            items.append(EvidenceItem(  # the model cites seconds from the clip start; records use source time
                modality=modality, start=evidence.start + start, end=evidence.start + max(start, end),
                claim=str(item.get("claim", ""))[:1000], feature=str(item.get("feature") or "")[:100],
                value=_number(item.get("value"))))
        return {"label": label, "labels": tuple(labels), "label_probabilities": probabilities,
                "intensity": _number(answer.get("intensity")), "valence": _number(answer.get("valence")),
                "arousal": _number(answer.get("arousal")), "steps": steps, "evidence": tuple(items)}

    # -- the contract

    def _demonstrations(self, query_text: str) -> list[Demonstration]:
        with self._select_lock:  # the pool is embedded once, by the first caller
            return self.selector.select(query_text, self.config.few_shot)

    async def annotate(self, evidence: ClipEvidence, space: LabelSpace) -> Annotation:
        started = time.monotonic()
        spoken = evidence.transcript.text or " ".join(w.text for w in evidence.transcript.words)
        injection = detect_injection(spoken)
        base: dict[str, Any] = {
            "id": annotation_id(evidence.clip.id, self.id, PROMPT_VERSION), "clip_id": evidence.clip.id,
            "annotator_id": self.id, "model": self.endpoint.model, "endpoint": self.endpoint.base_url,
            "prompt_version": PROMPT_VERSION, "temperature": self.endpoint.temperature, "label_space": space.name,
            "injection_flag": bool(injection), "injection_reason": injection,
        }
        exchanges: list[Exchange] = []

        def finish(status: AnnotationStatus, reason: str = "", raw: str = "", **fields: Any) -> Annotation:
            spent_in = sum(e.tokens_in for e in exchanges if not e.cached)
            spent_out = sum(e.tokens_out for e in exchanges if not e.cached)
            cost = (spent_in * self.endpoint.price_in_per_million
                    + spent_out * self.endpoint.price_out_per_million) / 1_000_000
            return Annotation(**base, **fields, status=status, reason=self._redact(reason),
                              raw_response=self._redact(raw)[:MAX_RAW_CHARS],
                              tokens_in=sum(e.tokens_in for e in exchanges),
                              tokens_out=sum(e.tokens_out for e in exchanges), cost_usd=cost,
                              cached=bool(exchanges) and all(e.cached for e in exchanges),
                              latency_s=round(time.monotonic() - started, 4))

        try:
            text = serialise(evidence)
            demonstrations = await asyncio.to_thread(self._demonstrations, text) if self.config.few_shot else []
            messages = build_messages(evidence, space, self.endpoint, self.config, demonstrations, text)
        except PromptError as error:
            return finish(AnnotationStatus.ERROR, f"prompt could not be built: {error}")
        request = self._request(messages, space)
        try:
            exchanges.append(await self._send(request))
            reading = self._read(exchanges[-1], evidence, space, repaired=False)
            if reading.retry_with_repair:
                repair = dict(request, messages=messages + [
                    {"role": "assistant", "content": reading.content[:MAX_RAW_CHARS]},
                    {"role": "user", "content": repair_prompt(space, reading.reason)}])
                exchanges.append(await self._send(repair))
                reading = self._read(exchanges[-1], evidence, space, repaired=True)
        except EndpointFailure as failure:
            return finish(AnnotationStatus.ERROR, str(failure))
        return finish(reading.status, reading.reason, reading.content, **reading.fields)


def _usage(body: str) -> tuple[int, int]:
    try:
        usage = json.loads(body).get("usage") or {}
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0, 0
