#!/usr/bin/env python3
"""A fake LLM provider endpoint, for pg_ratelimit's tests and benchmarks.

    python3 tests/provider/simulator.py [--host 127.0.0.1] [--port 0]
        [--rpm N] [--tpm N] [--itpm N] [--otpm N] [--latency-ms MIN:MAX] [--seed N]

Python's standard library only.  It prints the port it listens on as the first
line of its standard output (useful with --port 0, which picks a free one),
then serves until it is killed.

What it speaks, enough for the real SDKs (openai, @anthropic-ai/sdk) to work
against it (their base URL: http://HOST:PORT/v1 for OpenAI, http://HOST:PORT
for Anthropic):

  POST /v1/chat/completions   OpenAI: a chat.completion object with
                              usage {prompt_tokens, completion_tokens, total_tokens}
  POST /v1/messages           Anthropic: a message object with
                              usage {input_tokens, output_tokens}
  GET  /stats                 JSON: the configuration, and per API key the calls
                              accepted and refused (429), the tokens accepted of
                              each kind, and the level of each bucket now
  POST /reset                 forget every key (their buckets start full again)
  POST /advance               test-only: {"seconds": N} moves the simulator's
                              clock N seconds forward (buckets refill, reset
                              times move), so that tests need not sleep

The API key is the x-api-key header (Anthropic's) or the Authorization:
Bearer token (OpenAI's, and what recent Anthropic SDKs send), on either
endpoint; a call without one is answered 401.  Every key has its own buckets,
shared by both endpoints.

Buckets.  Each configured limit L (--rpm requests, --tpm tokens, --itpm input
tokens, --otpm output tokens, all per minute; an absent one is not limited)
is a token bucket of capacity L that starts full and refills continuously at
L/60 per second, never above L.

Admission, as the providers document it.  When a call arrives the provider
cannot know its usage yet, so it counts an *estimate* the request declares:
  - input:  the field "estimated_input_tokens" of the request when present,
            else ceil(characters / 4) over the text of the messages (and of
            "system" for Anthropic);
  - output: max_tokens (OpenAI: max_completion_tokens or max_tokens, 0 when
            absent; Anthropic: max_tokens, required).
The call takes 1 from the requests bucket, input + output from the tokens
bucket, input from the input bucket and output from the output bucket (both
endpoints alike: OpenAI counts prompt + max_tokens against TPM, Anthropic
input against ITPM and max_tokens against OTPM).  All or nothing: when any
bucket holds less than its amount (a bucket below zero refuses even an amount
of 0) nothing is taken and the answer is 429, with retry-after the whole
seconds (rounded up) until every short bucket holds its amount.  A call that
needs more than a bucket's capacity could never fit: 400.

Settlement.  The call then takes a simulated time (--latency-ms MIN:MAX,
uniform, default 0:0), and completes with its *actual* usage: the test-only
field "simulate": {"input_tokens": N, "output_tokens": M} of the request when
present, else the input estimate and max_tokens (16 when absent).  The
buckets settle to it: a refund (actual < estimate) goes back, never above
capacity; an overage is taken, and a bucket may go below zero.  The request
bucket is not settled.  "simulate": {"latency_ms": N} overrides the latency
of one call.  Everything but the latency is deterministic.

Headers, on every answer once the key is known (200, 429, and 400):
  OpenAI     x-ratelimit-limit-requests|tokens, x-ratelimit-remaining-requests|tokens,
             x-ratelimit-reset-requests|tokens (the time until the bucket is
             full, as Go prints durations: "6m0s", "1s", "1.5s", "20ms", "0s")
  Anthropic  anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
             {limit,remaining,reset} (reset: the RFC 3339 time, rounded up to
             the second, when the bucket is full).  The tokens headers show
             the --tpm bucket; without one, whichever of the input and output
             buckets has the fewest tokens left, as Anthropic documents.
Headers are sent only for configured buckets.  remaining is the bucket's
level rounded down, never below 0, taken after the call's settlement (200)
or at its refusal (429).  A 429 also carries retry-after (whole seconds) and
an error body shaped like the provider's:
  OpenAI     {"error": {"message", "type": "requests"|"tokens", "param": null,
                        "code": "rate_limit_exceeded"}}
  Anthropic  {"type": "error", "error": {"type": "rate_limit_error", "message"}}
Streaming is not supported (400).
"""
import argparse
import itertools
import json
import math
import random
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("requests", "tokens", "input_tokens", "output_tokens")
OPTION_OF = {"requests": "rpm", "tokens": "tpm", "input_tokens": "itpm", "output_tokens": "otpm"}


class Bucket:
    """A token bucket: capacity L, refilling at L/60 per second, never above L."""

    def __init__(self, capacity, now):
        self.capacity = capacity
        self.level = float(capacity)
        self.at = now

    @property
    def rate(self):
        return self.capacity / 60.0

    def refill(self, now):
        if now > self.at:
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
            self.at = now

    def remaining(self):
        return max(0, math.floor(self.level))

    def seconds_to_hold(self, amount):
        """Seconds until the bucket holds amount (0 when it does)."""
        return max(0.0, (amount - self.level) / self.rate)

    def seconds_to_full(self):
        return max(0.0, (self.capacity - self.level) / self.rate)


class Key:
    """One API key: its buckets and what it was served."""

    def __init__(self, limits, now):
        self.buckets = {k: Bucket(limit, now) for k, limit in limits.items() if limit is not None}
        self.accepted = 0
        self.refused = 0
        self.refused_by = {k: 0 for k in self.buckets}
        self.too_large = 0
        self.in_flight = 0
        self.used = {"input_tokens": 0, "output_tokens": 0, "tokens": 0}
        self.estimated = {"input_tokens": 0, "output_tokens": 0, "tokens": 0}


def amounts_of(input_tokens, output_tokens):
    return {"requests": 1, "tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens, "output_tokens": output_tokens}


class Provider:
    """The buckets of every key.  clock() is seconds on a monotonic clock."""

    def __init__(self, rpm=None, tpm=None, itpm=None, otpm=None, latency_ms=(0, 0), seed=None,
                 clock=time.monotonic, wall=time.time):
        self.limits = {"requests": rpm, "tokens": tpm, "input_tokens": itpm, "output_tokens": otpm}
        self.latency_ms = latency_ms
        self.random = random.Random(seed)
        self._clock = clock
        self._wall = wall
        self.offset = 0.0           # POST /advance
        self.lock = threading.Lock()
        self.keys = {}

    def now(self):
        return self._clock() + self.offset

    def wall(self):
        return self._wall() + self.offset

    def advance(self, seconds):
        with self.lock:
            self.offset += seconds

    def reset(self):
        with self.lock:
            self.keys = {}

    def _key(self, api_key, now):
        key = self.keys.get(api_key)
        if key is None:
            key = self.keys[api_key] = Key(self.limits, now)
        for bucket in key.buckets.values():
            bucket.refill(now)
        return key

    def admit(self, api_key, input_tokens, output_tokens):
        """Count a call's estimate, all or nothing.  Returns (verdict, detail):
        ("ok", None), ("429", (seconds, short kinds)) or ("too_large", kind)."""
        amounts = amounts_of(input_tokens, output_tokens)
        with self.lock:
            now = self.now()
            key = self._key(api_key, now)
            for kind, bucket in key.buckets.items():
                if amounts[kind] > bucket.capacity:
                    key.too_large += 1
                    return "too_large", kind
            short = [k for k, b in key.buckets.items() if b.level < amounts[k]]
            if short:
                key.refused += 1
                for kind in short:
                    key.refused_by[kind] += 1
                wait = max(key.buckets[k].seconds_to_hold(amounts[k]) for k in short)
                return "429", (wait, short)
            for kind, bucket in key.buckets.items():
                bucket.level -= amounts[kind]
            key.accepted += 1
            key.in_flight += 1
            for kind in key.estimated:
                key.estimated[kind] += amounts[kind]
            return "ok", None

    def settle(self, api_key, estimate, actual):
        """A call admitted with estimate (input, output) used actual (input, output)."""
        est = amounts_of(*estimate)
        act = amounts_of(*actual)
        with self.lock:
            key = self._key(api_key, self.now())
            for kind, bucket in key.buckets.items():
                if kind != "requests":
                    bucket.level = min(bucket.capacity, bucket.level - (act[kind] - est[kind]))
            key.in_flight -= 1
            for kind in key.used:
                key.used[kind] += act[kind]

    def latency(self, override_ms=None):
        if override_ms is not None:
            return max(0.0, float(override_ms)) / 1000.0
        low, high = self.latency_ms
        with self.lock:
            return self.random.uniform(low, high) / 1000.0

    def headers(self, api_key, style):
        """The rate-limit headers of a key's buckets now, OpenAI or Anthropic style."""
        with self.lock:
            now = self.now()
            wall = self.wall()
            key = self._key(api_key, now)
            b = key.buckets
            out = {}
            if style == "openai":
                for kind in ("requests", "tokens"):
                    if kind in b:
                        out[f"x-ratelimit-limit-{kind}"] = str(b[kind].capacity)
                        out[f"x-ratelimit-remaining-{kind}"] = str(b[kind].remaining())
                        out[f"x-ratelimit-reset-{kind}"] = go_duration(b[kind].seconds_to_full())
                return out
            shown = {k: b[k] for k in ("requests", "input_tokens", "output_tokens") if k in b}
            if "tokens" in b:
                shown["tokens"] = b["tokens"]
            else:
                io = [b[k] for k in ("input_tokens", "output_tokens") if k in b]
                if io:
                    shown["tokens"] = min(io, key=lambda bucket: bucket.level)
            for kind, bucket in shown.items():
                name = "anthropic-ratelimit-" + kind.replace("_", "-")
                out[f"{name}-limit"] = str(bucket.capacity)
                out[f"{name}-remaining"] = str(bucket.remaining())
                out[f"{name}-reset"] = rfc3339(wall + bucket.seconds_to_full())
            return out

    def stats(self):
        with self.lock:
            now = self.now()
            keys = {}
            for api_key in self.keys:
                key = self._key(api_key, now)
                keys[api_key] = {
                    "accepted": key.accepted,
                    "refused": key.refused,
                    "refused_by": dict(key.refused_by),
                    "too_large": key.too_large,
                    "in_flight": key.in_flight,
                    "used": dict(key.used),
                    "estimated": dict(key.estimated),
                    "buckets": {k: {"limit": bk.capacity, "level": round(bk.level, 3)}
                                for k, bk in key.buckets.items()},
                }
            return {
                "config": {OPTION_OF[k]: v for k, v in self.limits.items()}
                | {"latency_ms": list(self.latency_ms)},
                "keys": keys,
            }


def go_duration(seconds):
    """A duration as Go prints it, rounded up to the millisecond: 0s, 20ms, 1s, 1.5s, 6m0s, 1h2m3s."""
    ms = math.ceil(round(seconds * 1000, 6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def rfc3339(epoch_seconds):
    """An RFC 3339 UTC time, rounded up to the second: 2030-01-01T00:00:05Z."""
    t = datetime.fromtimestamp(math.ceil(epoch_seconds), tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def text_of(content):
    """The text of a message's content: a string, or a list of blocks with "text"."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content
                       if isinstance(block, dict) and isinstance(block.get("text"), str))
    return ""


def is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class BadRequest(Exception):
    pass


def parse_call(body, style):
    """(input estimate, output estimate, actual input, actual output, latency override)"""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if not isinstance(body.get("model"), str):
        raise BadRequest("model: a string is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: a non-empty list is required")
    if body.get("stream"):
        raise BadRequest("stream: streaming is not supported by the simulator")
    if "estimated_input_tokens" in body:
        est_in = body["estimated_input_tokens"]
        if not is_count(est_in):
            raise BadRequest("estimated_input_tokens: a non-negative integer is required")
    else:
        text = "".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
        if style == "anthropic":
            text += text_of(body.get("system"))
        est_in = math.ceil(len(text) / 4)
    if style == "anthropic":
        est_out = body.get("max_tokens")
        if not is_count(est_out) or est_out < 1:
            raise BadRequest("max_tokens: a positive integer is required")
    else:
        est_out = body.get("max_completion_tokens", body.get("max_tokens"))
        if est_out is None:
            est_out = 0
        elif not is_count(est_out):
            raise BadRequest("max_tokens: a non-negative integer is required")
    sim = body.get("simulate") or {}
    if not isinstance(sim, dict):
        raise BadRequest("simulate: an object is required")
    act_in = sim.get("input_tokens", est_in)
    act_out = sim.get("output_tokens", est_out if est_out > 0 else 16)
    if not is_count(act_in) or not is_count(act_out):
        raise BadRequest("simulate: input_tokens and output_tokens must be non-negative integers")
    latency = sim.get("latency_ms")
    if latency is not None and (not isinstance(latency, (int, float)) or latency < 0):
        raise BadRequest("simulate.latency_ms: a non-negative number is required")
    return est_in, est_out, act_in, act_out, latency


_ids = itertools.count(1)


def error_body(style, status, kind, message):
    if style == "openai":
        return {"error": {"message": message, "type": kind, "param": None,
                          "code": "rate_limit_exceeded" if status == 429 else None}}
    return {"type": "error", "error": {"type": kind, "message": message}}


def completion(style, model, act_in, act_out):
    n = next(_ids)
    text = f"simulated answer {n}"
    if style == "openai":
        return {
            "id": f"chatcmpl-sim{n}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text, "refusal": None}}],
            "usage": {"prompt_tokens": act_in, "completion_tokens": act_out,
                      "total_tokens": act_in + act_out},
        }
    return {
        "id": f"msg_sim{n}", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": act_in, "output_tokens": act_out,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: a client's calls share a connection
    server_version = "pg-ratelimit-provider-simulator"

    @property
    def provider(self):
        return self.server.provider

    def log_message(self, format, *args):
        if self.server.verbose:
            super().log_message(format, *args)

    def send_json(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw

    def do_GET(self):
        if self.path.split("?")[0] == "/stats":
            self.send_json(200, self.provider.stats())
        else:
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        path = self.path.split("?")[0]
        body = self.read_body()
        if path == "/v1/chat/completions":
            self.call("openai", body)
        elif path == "/v1/messages":
            self.call("anthropic", body)
        elif path == "/reset":
            self.provider.reset()
            self.send_json(200, {"reset": True})
        elif path == "/advance":
            seconds = body.get("seconds") if isinstance(body, dict) else None
            if not isinstance(seconds, (int, float)) or seconds < 0:
                self.send_json(400, {"error": {"message": "seconds: a non-negative number"}})
                return
            self.provider.advance(seconds)
            self.send_json(200, {"advanced": seconds})
        else:
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})

    def api_key(self):
        """x-api-key, else the Authorization: Bearer token (both APIs take
        both: recent Anthropic SDKs send the key as a bearer token)."""
        key = (self.headers.get("x-api-key") or "").strip()
        auth = self.headers.get("authorization") or ""
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        return key or None

    def call(self, style, body):
        provider = self.provider
        api_key = self.api_key()
        if not api_key:
            if style == "openai":
                err = {"error": {"message": "Missing bearer authentication in header",
                                 "type": "invalid_request_error", "param": None,
                                 "code": "invalid_api_key"}}
            else:
                err = error_body(style, 401, "authentication_error", "x-api-key header is required")
            self.send_json(401, err)
            return
        try:
            est_in, est_out, act_in, act_out, latency = parse_call(body, style)
        except BadRequest as e:
            kind = "invalid_request_error"
            self.send_json(400, error_body(style, 400, kind, str(e)), provider.headers(api_key, style))
            return
        verdict, detail = provider.admit(api_key, est_in, est_out)
        if verdict == "too_large":
            self.send_json(400, error_body(style, 400, "invalid_request_error",
                                           f"Request too large: it needs more {detail} than the "
                                           f"limit of {OPTION_OF[detail]} allows"),
                           provider.headers(api_key, style))
            return
        if verdict == "429":
            wait, short = detail
            retry_after = max(1, math.ceil(round(wait, 6)))
            if style == "openai":
                kind = "requests" if short == ["requests"] else "tokens"
                message = (f"Rate limit reached for {kind} ({', '.join(OPTION_OF[k] for k in short)})."
                           f" Please try again in {go_duration(wait)}.")
            else:
                kind = "rate_limit_error"
                message = ("This request would exceed the rate limit for your organization"
                           f" ({', '.join(OPTION_OF[k] for k in short)}). Please retry after"
                           f" {retry_after} seconds.")
            headers = provider.headers(api_key, style)
            headers["retry-after"] = str(retry_after)
            self.send_json(429, error_body(style, 429, kind, message), headers)
            return
        try:
            time.sleep(provider.latency(latency))
        finally:
            provider.settle(api_key, (est_in, est_out), (act_in, act_out))
        self.send_json(200, completion(style, body["model"], act_in, act_out),
                       provider.headers(api_key, style))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128        # many clients may connect at once

    def __init__(self, address, provider, verbose=False):
        super().__init__(address, Handler)
        self.provider = provider
        self.verbose = verbose


def latency_range(text):
    low, _, high = text.partition(":")
    low = float(low)
    high = float(high) if high else low
    if low < 0 or high < low:
        raise argparse.ArgumentTypeError("MIN:MAX with 0 <= MIN <= MAX")
    return (low, high)


def limit(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a limit is a positive integer")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rpm", type=limit)
    parser.add_argument("--tpm", type=limit)
    parser.add_argument("--itpm", type=limit)
    parser.add_argument("--otpm", type=limit)
    parser.add_argument("--latency-ms", type=latency_range, default=(0.0, 0.0), metavar="MIN:MAX")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--verbose", action="store_true", help="log every request on stderr")
    args = parser.parse_args(argv)
    provider = Provider(args.rpm, args.tpm, args.itpm, args.otpm, args.latency_ms, args.seed)
    server = Server((args.host, args.port), provider, args.verbose)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
