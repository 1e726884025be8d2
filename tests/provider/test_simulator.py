#!/usr/bin/env python3
"""Tests of the provider simulator (tests/provider/simulator.py).

    python3 tests/provider/test_simulator.py      # TAP output, as scripts/test.sh counts it
    python3 -m pytest tests/provider              # or with pytest, or python3 -m unittest

The buckets run on a clock the tests move (never on real time), so nothing
here depends on how fast the machine is: refill, all-or-nothing admission,
429 with retry-after, the OpenAI and Anthropic header formats, settlement to
the actual usage, and the HTTP endpoints through a real server on a free port.
"""
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simulator  # noqa: E402

EPOCH = 1_900_000_000.0        # the fake wall clock's start (2030-03-17)


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def wall(self):
        return EPOCH + self.t - 1000.0


def provider(**limits):
    clock = FakeClock()
    return simulator.Provider(clock=clock, wall=clock.wall, **limits), clock


class BucketTest(unittest.TestCase):
    def test_refill_is_continuous_and_capped(self):
        p, clock = provider(rpm=60, tpm=6000)
        for _ in range(60):
            self.assertEqual(p.admit("k", 10, 0)[0], "ok")
        self.assertEqual(p.admit("k", 10, 0)[0], "429", "the 61st request in the same instant")
        clock.t += 0.5
        self.assertEqual(p.admit("k", 10, 0)[0], "429", "half a second refills half a request")
        clock.t += 0.5
        self.assertEqual(p.admit("k", 10, 0)[0], "ok", "a second refills one request of 60 rpm")
        self.assertEqual(p.admit("k", 10, 0)[0], "429")
        clock.t += 3600
        stats = p.stats()["keys"]["k"]["buckets"]
        self.assertEqual(stats["requests"]["level"], 60, "never above capacity")
        self.assertEqual(stats["tokens"]["level"], 6000)

    def test_tokens_refill_at_limit_per_minute(self):
        p, clock = provider(tpm=600)          # 10 tokens a second
        self.assertEqual(p.admit("k", 600, 0)[0], "ok")
        clock.t += 2
        verdict, (wait, short) = p.admit("k", 25, 0)
        self.assertEqual((verdict, short), ("429", ["tokens"]))
        self.assertAlmostEqual(wait, 0.5, msg="20 tokens held, 25 needed: 0.5 s more")
        clock.t += 0.5
        self.assertEqual(p.admit("k", 25, 0)[0], "ok")

    def test_all_or_nothing(self):
        p, clock = provider(rpm=10, tpm=100)
        self.assertEqual(p.admit("k", 60, 20)[0], "ok")        # 80 tokens
        verdict, (_, short) = p.admit("k", 30, 0)               # 30 > 20 left
        self.assertEqual((verdict, short), ("429", ["tokens"]))
        buckets = p.stats()["keys"]["k"]["buckets"]
        self.assertEqual(buckets["requests"]["level"], 9, "a refused call takes no request")
        self.assertEqual(buckets["tokens"]["level"], 20)
        self.assertEqual(p.admit("k", 15, 5)[0], "ok", "a call that fits every bucket")
        self.assertEqual(p.stats()["keys"]["k"]["buckets"]["requests"]["level"], 8)

    def test_input_and_output_buckets(self):
        p, clock = provider(rpm=100, itpm=1000, otpm=100)
        self.assertEqual(p.admit("k", 500, 90)[0], "ok")
        verdict, (_, short) = p.admit("k", 10, 20)
        self.assertEqual((verdict, short), ("429", ["output_tokens"]))
        self.assertEqual(p.admit("k", 400, 10)[0], "ok")
        verdict, (_, short) = p.admit("k", 200, 1)
        self.assertEqual((verdict, short), ("429", ["input_tokens", "output_tokens"]),
                         "every short bucket is named")

    def test_never_fits(self):
        p, _ = provider(tpm=100)
        self.assertEqual(p.admit("k", 80, 30), ("too_large", "tokens"))
        self.assertEqual(p.stats()["keys"]["k"]["accepted"], 0)

    def test_keys_are_separate(self):
        p, _ = provider(rpm=1)
        self.assertEqual(p.admit("a", 1, 0)[0], "ok")
        self.assertEqual(p.admit("a", 1, 0)[0], "429")
        self.assertEqual(p.admit("b", 1, 0)[0], "ok")


class SettlementTest(unittest.TestCase):
    def test_refund_and_overage(self):
        p, clock = provider(tpm=1000, itpm=600, otpm=400)
        self.assertEqual(p.admit("k", 300, 200)[0], "ok")
        p.settle("k", (300, 200), (250, 120))                  # 130 tokens back
        b = p.stats()["keys"]["k"]["buckets"]
        self.assertEqual((b["tokens"]["level"], b["input_tokens"]["level"],
                          b["output_tokens"]["level"]), (630, 350, 280))
        self.assertEqual(p.admit("k", 300, 200)[0], "ok")
        p.settle("k", (300, 200), (400, 300))                  # 200 more than counted
        b = p.stats()["keys"]["k"]["buckets"]
        self.assertEqual((b["tokens"]["level"], b["input_tokens"]["level"],
                          b["output_tokens"]["level"]), (-70, -50, -20), "below zero")
        verdict, (wait, short) = p.admit("k", 0, 0)
        self.assertEqual(verdict, "429", "a bucket below zero refuses even nothing")
        self.assertEqual(set(short), {"tokens", "input_tokens", "output_tokens"})
        # tokens: 70 at 1000/60 a second, 4.2 s; output: 20 at 400/60, 3 s; input: 50 at 10, 5 s
        self.assertAlmostEqual(wait, 5.0, msg="the longest wait of the short buckets")
        used = p.stats()["keys"]["k"]["used"]
        self.assertEqual(used, {"input_tokens": 650, "output_tokens": 420, "tokens": 1070})

    def test_refund_never_above_capacity(self):
        p, clock = provider(tpm=1000)
        self.assertEqual(p.admit("k", 500, 0)[0], "ok")
        clock.t += 120
        p.settle("k", (500, 0), (10, 0))
        self.assertEqual(p.stats()["keys"]["k"]["buckets"]["tokens"]["level"], 1000)

    def test_requests_are_not_settled(self):
        p, _ = provider(rpm=5, tpm=1000)
        self.assertEqual(p.admit("k", 10, 10)[0], "ok")
        p.settle("k", (10, 10), (0, 0))
        self.assertEqual(p.stats()["keys"]["k"]["buckets"]["requests"]["level"], 4)


class FormatTest(unittest.TestCase):
    def test_go_durations(self):
        cases = {0: "0s", 0.02: "20ms", 0.0201: "21ms", 0.999: "999ms", 1: "1s", 1.5: "1.5s",
                 4.98: "4.98s", 59.9999: "1m0s", 360: "6m0s", 90.25: "1m30.25s", 3723: "1h2m3s"}
        for seconds, text in cases.items():
            self.assertEqual(simulator.go_duration(seconds), text, seconds)

    def test_rfc3339(self):
        self.assertEqual(simulator.rfc3339(EPOCH), "2030-03-17T17:46:40Z")
        self.assertEqual(simulator.rfc3339(EPOCH + 0.2), "2030-03-17T17:46:41Z", "rounded up")

    def test_openai_headers(self):
        p, clock = provider(rpm=60, tpm=6000, otpm=100)
        p.admit("k", 500, 100)
        h = p.headers("k", "openai")
        self.assertEqual(h, {
            "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "6000", "x-ratelimit-remaining-tokens": "5400",
            "x-ratelimit-reset-tokens": "6s",
        }, "OpenAI has no input and output token headers")

    def test_anthropic_headers(self):
        p, clock = provider(rpm=50, itpm=30000, otpm=8000)
        p.admit("k", 1000, 800)
        clock.t += 0.5
        h = p.headers("k", "anthropic")
        self.assertEqual(h["anthropic-ratelimit-requests-limit"], "50")
        self.assertEqual(h["anthropic-ratelimit-requests-remaining"], "49")
        # 1 request at 50/60 a second: full 1.2 s after the call, rounded up to the second
        self.assertEqual(h["anthropic-ratelimit-requests-reset"], simulator.rfc3339(EPOCH + 2))
        self.assertEqual(h["anthropic-ratelimit-input-tokens-remaining"], "29250")
        self.assertEqual(h["anthropic-ratelimit-output-tokens-remaining"], "7266")
        # without --tpm, tokens are the input or output bucket with fewer left
        self.assertEqual(h["anthropic-ratelimit-tokens-limit"], "8000")
        self.assertEqual(h["anthropic-ratelimit-tokens-remaining"], "7266")
        for name, value in h.items():
            if name.endswith("-reset"):
                self.assertRegex(value, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", name)
        p2, _ = provider(rpm=50, tpm=1000, itpm=30000)
        self.assertEqual(p2.headers("k", "anthropic")["anthropic-ratelimit-tokens-limit"], "1000",
                         "with --tpm, tokens are the tokens bucket")

    def test_remaining_never_negative(self):
        p, _ = provider(tpm=100)
        p.admit("k", 50, 0)
        p.settle("k", (50, 0), (150, 0))
        self.assertEqual(p.headers("k", "openai")["x-ratelimit-remaining-tokens"], "0")

    def test_estimates(self):
        body = {"model": "m", "messages": [{"role": "user", "content": "x" * 9}], "max_tokens": 7}
        self.assertEqual(simulator.parse_call(body, "openai"), (3, 7, 3, 7, None))
        body = {"model": "m", "system": "y" * 4, "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 8}]}]}
        self.assertEqual(simulator.parse_call(body, "anthropic")[:2], (3, 5), "system counts")
        self.assertEqual(simulator.parse_call(body, "openai")[:2], (2, 5))
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}],
                "estimated_input_tokens": 40, "max_completion_tokens": 10,
                "simulate": {"input_tokens": 50, "output_tokens": 3, "latency_ms": 5}}
        self.assertEqual(simulator.parse_call(body, "openai"), (40, 10, 50, 3, 5))
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        self.assertEqual(simulator.parse_call(body, "openai"), (1, 0, 1, 16, None))
        with self.assertRaises(simulator.BadRequest):
            simulator.parse_call(body, "anthropic")                 # no max_tokens
        with self.assertRaises(simulator.BadRequest):
            simulator.parse_call(dict(body, simulate={"input_tokens": -1}), "openai")


class HttpTest(unittest.TestCase):
    """Through a real server, on the fake clock."""

    def setUp(self):
        self.p, self.clock = provider(rpm=60, tpm=600, itpm=6000, otpm=3000)
        self.server = simulator.Server(("127.0.0.1", 0), self.p)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.server.server_address[1], timeout=10)

    def tearDown(self):
        self.conn.close()
        self.server.shutdown()
        self.server.server_close()

    def request(self, method, path, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, data, {"content-type": "application/json", **(headers or {})})
        r = self.conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(r.read())

    def openai(self, key, body):
        return self.request("POST", "/v1/chat/completions", body, {"authorization": f"Bearer {key}"})

    def anthropic(self, key, body):
        return self.request("POST", "/v1/messages", body, {"x-api-key": key})

    def chat(self, prompt_tokens, max_tokens, actual=None):
        body = {"model": "gpt-sim", "messages": [{"role": "user", "content": "hi"}],
                "estimated_input_tokens": prompt_tokens, "max_tokens": max_tokens}
        if actual:
            body["simulate"] = {"input_tokens": actual[0], "output_tokens": actual[1]}
        return body

    def test_openai_completion(self):
        status, h, body = self.openai("k1", self.chat(100, 50, (90, 70)))
        self.assertEqual(status, 200)
        self.assertEqual(body["object"], "chat.completion")
        self.assertEqual(body["usage"], {"prompt_tokens": 90, "completion_tokens": 70,
                                         "total_tokens": 160})
        self.assertEqual(body["choices"][0]["message"]["role"], "assistant")
        # settled to the actual 160 before the answer
        self.assertEqual(h["x-ratelimit-remaining-tokens"], "440")
        self.assertEqual(h["x-ratelimit-remaining-requests"], "59")
        self.assertEqual(h["x-ratelimit-reset-tokens"], "16s")
        self.assertNotIn("retry-after", h)

    def test_openai_429(self):
        self.assertEqual(self.openai("k1", self.chat(500, 0, (500, 0)))[0], 200)
        status, h, body = self.openai("k1", self.chat(125, 0))        # 100 left, 10 a second
        self.assertEqual(status, 429)
        self.assertEqual(h["retry-after"], "3", "2.5 s, rounded up")
        self.assertEqual(h["x-ratelimit-remaining-tokens"], "100")
        self.assertEqual(h["x-ratelimit-limit-requests"], "60", "rate-limit headers on a 429 too")
        self.assertEqual(body["error"]["code"], "rate_limit_exceeded")
        self.assertEqual(body["error"]["type"], "tokens")
        self.clock.t += 2.5
        self.assertEqual(self.openai("k1", self.chat(125, 0))[0], 200, "after retry-after")

    def test_anthropic_message_and_429(self):
        body = {"model": "claude-sim", "max_tokens": 300, "estimated_input_tokens": 200,
                "messages": [{"role": "user", "content": "hi"}],
                "simulate": {"input_tokens": 200, "output_tokens": 250}}
        status, h, answer = self.anthropic("k2", body)
        self.assertEqual(status, 200)
        self.assertEqual(answer["type"], "message")
        self.assertEqual(answer["content"][0]["type"], "text")
        self.assertEqual(answer["usage"]["input_tokens"], 200)
        self.assertEqual(answer["usage"]["output_tokens"], 250)
        self.assertEqual(h["anthropic-ratelimit-output-tokens-remaining"], "2750")
        self.assertEqual(h["anthropic-ratelimit-input-tokens-remaining"], "5800")
        self.assertEqual(h["anthropic-ratelimit-tokens-remaining"], "150", "the tpm bucket")
        self.assertEqual(h["anthropic-ratelimit-requests-reset"], simulator.rfc3339(EPOCH + 1))
        self.assertEqual(h["anthropic-ratelimit-tokens-reset"], simulator.rfc3339(EPOCH + 45))
        self.assertNotIn("x-ratelimit-limit-requests", h, "Anthropic headers only")
        status, h, answer = self.anthropic("k2", dict(body, max_tokens=100))
        self.assertEqual(status, 429)
        self.assertEqual(answer, {"type": "error", "error": {
            "type": "rate_limit_error", "message": answer["error"]["message"]}})
        # tokens: 300 needed, 150 held, at 10 a second
        self.assertEqual(h["retry-after"], "15")
        self.assertEqual(h["anthropic-ratelimit-tokens-remaining"], "150")
        self.assertIn("anthropic-ratelimit-requests-remaining", h)

    def test_authentication_and_bad_requests(self):
        status, _, body = self.request("POST", "/v1/chat/completions", self.chat(1, 1))
        self.assertEqual(status, 401)
        self.assertEqual(body["error"]["code"], "invalid_api_key")
        status, _, body = self.request("POST", "/v1/messages", {"model": "m"})
        self.assertEqual((status, body["error"]["type"]), (401, "authentication_error"))
        status, _, body = self.request("POST", "/v1/messages", {"model": "m", "max_tokens": 5,
                                       "messages": [{"role": "user", "content": "hi"}]},
                                       {"authorization": "Bearer k3"})
        self.assertEqual(status, 200, "Anthropic with a bearer token, as recent SDKs send it")
        self.assertEqual(self.p.stats()["keys"]["k3"]["accepted"], 1)
        status, h, body = self.anthropic("k", {"model": "m", "messages": [{"role": "user"}]})
        self.assertEqual((status, body["error"]["type"]), (400, "invalid_request_error"))
        status, h, body = self.openai("k", self.chat(700, 0))
        self.assertEqual(status, 400, "more than the bucket's capacity never fits")
        self.assertIn("x-ratelimit-limit-tokens", h)

    def test_stats_reset_and_advance(self):
        self.openai("a", self.chat(100, 50, (80, 60)))
        self.openai("a", self.chat(500, 50))                          # 429: 460 left
        self.anthropic("b", {"model": "m", "max_tokens": 10, "estimated_input_tokens": 5,
                             "messages": [{"role": "user", "content": "x"}]})
        status, _, stats = self.request("GET", "/stats")
        self.assertEqual(status, 200)
        self.assertEqual(stats["config"], {"rpm": 60, "tpm": 600, "itpm": 6000, "otpm": 3000,
                                           "latency_ms": [0, 0]})
        a = stats["keys"]["a"]
        self.assertEqual((a["accepted"], a["refused"], a["refused_by"]["tokens"]), (1, 1, 1))
        self.assertEqual(a["used"], {"input_tokens": 80, "output_tokens": 60, "tokens": 140})
        self.assertEqual(a["estimated"]["tokens"], 150)
        self.assertEqual(stats["keys"]["b"]["used"]["tokens"], 15)
        self.assertEqual(self.request("POST", "/advance", {"seconds": 30})[0], 200)
        _, _, stats = self.request("GET", "/stats")
        self.assertEqual(stats["keys"]["a"]["buckets"]["tokens"]["level"], 600, "refilled")
        self.assertEqual(self.request("POST", "/reset", {})[0], 200)
        _, _, stats = self.request("GET", "/stats")
        self.assertEqual(stats["keys"], {})


class CommandLineTest(unittest.TestCase):
    def test_port_0_prints_the_port_first(self):
        proc = subprocess.Popen([sys.executable, simulator.__file__, "--port", "0", "--rpm", "7",
                                 "--latency-ms", "1:2"], stdout=subprocess.PIPE, text=True)
        try:
            port = int(proc.stdout.readline())
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/stats")
            stats = json.loads(conn.getresponse().read())
            self.assertEqual(stats["config"]["rpm"], 7)
            self.assertEqual(stats["config"]["latency_ms"], [1, 2])
            self.assertIsNone(stats["config"]["tpm"])
            conn.close()
        finally:
            proc.terminate()
            proc.wait()


class TapResult(unittest.TestResult):
    """TAP lines, which scripts/test.sh counts: ok N - name / not ok N - name."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def report(self, ok, test, note=""):
        self.n += 1
        print(f"{'ok' if ok else 'not ok'} {self.n} - {test.id().split('.', 1)[-1]}{note}", flush=True)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.report(True, test)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.report(True, test, f" # skip {reason}")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.report(False, test)
        print(re.sub("^", "# ", self.failures[-1][1].rstrip(), flags=re.M))

    def addError(self, test, err):
        super().addError(test, err)
        self.report(False, test)
        print(re.sub("^", "# ", self.errors[-1][1].rstrip(), flags=re.M))


if __name__ == "__main__":
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = TapResult()
    suite.run(result)
    print(f"1..{result.n}")
    sys.exit(0 if result.wasSuccessful() else 1)
