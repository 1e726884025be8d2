#!/usr/bin/env python3
"""Goodput: how much of a provider's limits the limiter's clients get, and how
many 429s they meet on the way.  Run by `bash tests/bench/run.sh goodput`,
which starts the server and sets PGHOST, PGPORT, PGUSER and PGDATABASE (the
database has the extension, in the schema ratelimit).  A benchmark: it prints
figures and asserts nothing.

Each scenario gets a provider of its own (tests/provider/simulator.py, which
enforces the limits as token buckets) and a model of its own with the same
limits, then CLIENTS threads (32), one connection each, loop for DURATION
seconds (120):

    rl_acquire(tokens => the estimate the provider counts, max_wait => the rest
               of the busy period)   -- waiting in the server
    -> the provider call, whose actual usage differs from the estimate by up
       to +-30 % (the simulator's test-only "simulate" field)
    -> rl_observe(model, headers, status)     (scenarios "+ rl_observe")
    -> rl_release(lease_id, input_tokens, output_tokens) with the actual usage
       (a 429: input 0, output 0, requests 0, since the provider took nothing)

Demand comes in waves, the same for every scenario (seeded): all clients busy
for 3 to 30 s, then all idle for 3 to 30 s, because steady demand hides what a
window boundary costs.  A client that meets a 429 without rl_observe sleeps the
retry-after, as the SDKs do; with rl_observe the limiter holds every client
back until the provider's retry-after.

Scenarios (SCENARIOS picks some, by name):
  fixed            window_type 'fixed' (the default)
  bucket           window_type 'bucket'
  bucket+observe   bucket, rl_observe after each call
  bucket+observe-after-release
                   the same with rl_observe after rl_release instead of before
                   (a diagnostic: see "Own overage counted twice" below)
  bypass           bucket, and one more client that calls the provider with
                   the same key without the limiter, steadily, at BYPASS (20 %)
                   of the limits: another user of the key
  bypass+observe   the same with rl_observe
  anthropic+observe  (when rl_acquire has output_tokens) Anthropic's API with
                   separate input and output limits (itpm, otpm), bucket,
                   rl_observe: acquire tokens => the input estimate and
                   output_tokens => max_tokens

NETWORK_MS=MIN:MAX adds a one-way network delay each way (default none).

Utilisation is what the provider accepted (requests, and actual tokens, of
every caller of the key) divided by what an ideal replay of the same demand
gets under the same limits.  The replay is a fluid model, in steps of 10 ms:
a bucket of each provider limit L (capacity L, refilling at L/60 a second),
starting full; in each step the demand asks for d * dt calls, where d is
CLIENTS / (mean latency, network included) during busy periods (every client calling back to
back with no overhead: an upper bound of the demand) plus the bypass rate
always; the step admits a = min(d * dt, min over limits k of
(level_k + L_k/60 * dt) / u_k) calls, u_k being the mean units a call takes
from limit k (1 request; the mean actual tokens, which equal the mean
estimates); each level becomes min(L_k, level_k + L_k/60 * dt - a * u_k).
The allowance is the sum of a (requests) and of a * u_tokens (tokens) over
the run.  Because the replay's demand is an upper bound and it has no
granularity (it may admit part of a call), it is slightly above what any real
client could get: a utilisation near 100 % is the best possible.
"""
import http.client
import json
import math
import os
import queue
import random
import subprocess
import sys
import threading
import time

import psycopg
from psycopg.types.json import Jsonb

HERE = os.path.dirname(os.path.abspath(__file__))
SIMULATOR = os.path.join(HERE, "..", "provider", "simulator.py")

DURATION = float(os.environ.get("DURATION", 120))
CLIENTS = int(os.environ.get("CLIENTS", 32))
SEED = int(os.environ.get("SEED", 13))
RPM = int(os.environ.get("RPM", 600))
TPM = int(os.environ.get("TPM", 60000))
# the Anthropic-style scenario: the same mean call, its input and output limits
ITPM = int(os.environ.get("ITPM", 36000))
OTPM = int(os.environ.get("OTPM", 24000))
LATENCY_MS = tuple(float(x) for x in os.environ.get("LATENCY_MS", "200:1000").split(":"))
# one-way network delay between the clients and the provider, each way (0 by
# default: the simulator is local).  With it, the provider's bucket starts
# refilling later than the limiter's (see the README proposal), and the
# headers the limiter is told are older.
NETWORK_MS = tuple(float(x) for x in os.environ.get("NETWORK_MS", "0:0").split(":"))
BYPASS = float(os.environ.get("BYPASS", 0.2))
# busy and idle periods, seconds
BUSY = (3.0, 30.0)
IDLE = (3.0, 30.0)
# a call's estimate: input uniform in [20, 100] tokens, max_tokens in [10, 70]
# (a mean of 100 tokens a call: rpm 600 and tpm 60000 bind alike); the actual
# usage of each part is the estimate times a factor uniform in [0.7, 1.3]
INPUT_EST = (20, 100)
MAX_TOKENS = (10, 70)
VARIATION = 0.3
# the bypassing client's calls: 60 input, 40 max_tokens
BYPASS_CALL = (60, 40)
# the fixed scenario starts at this second of the minute, so that its figures
# do not depend on when it happens to start (the waves are the same)
FIXED_PHASE = 50


def log(*args):
    print(*args, flush=True)


def waves(seed, duration):
    """The busy periods [(start, end)], the same for every scenario."""
    rng = random.Random(seed)
    periods, t = [], 0.0
    while t < duration:
        busy = rng.uniform(*BUSY)
        periods.append((t, min(duration, t + busy)))
        t += busy + rng.uniform(*IDLE)
    return periods


class Scenario:
    def __init__(self, name, window_type="bucket", observe=None, bypass=False, style="openai"):
        self.name = name
        self.window_type = window_type
        self.observe = observe          # None, "before" or "after" the release
        self.bypass = bypass
        self.style = style

    @property
    def limits(self):
        if self.style == "anthropic":
            return {"rpm": RPM, "itpm": ITPM, "otpm": OTPM}
        return {"rpm": RPM, "tpm": TPM}


ALL_SCENARIOS = [
    Scenario("fixed", window_type="fixed"),
    Scenario("bucket"),
    Scenario("bucket+observe", observe="before"),
    Scenario("bucket+observe-after-release", observe="after"),
    Scenario("bypass", bypass=True),
    Scenario("bypass+observe", observe="before", bypass=True),
    Scenario("anthropic+observe", observe="before", style="anthropic"),
]


class Simulator:
    def __init__(self, limits):
        args = [sys.executable, SIMULATOR, "--port", "0", "--seed", str(SEED),
                "--latency-ms", "%g:%g" % LATENCY_MS]
        for option, value in limits.items():
            args += [f"--{option}", str(value)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def connection(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def stats(self):
        conn = self.connection()
        conn.request("GET", "/stats")
        stats = json.loads(conn.getresponse().read())
        conn.close()
        return stats

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def network_delay():
    if NETWORK_MS[1] > 0:
        time.sleep(random.uniform(*NETWORK_MS) / 1000.0)


def call_provider(conn, style, api_key, est_in, max_tokens, act_in, act_out):
    """One call: (status, headers, usage (input, output) or None, retry-after seconds)"""
    network_delay()
    body = {"model": "sim", "messages": [{"role": "user", "content": "benchmark"}],
            "estimated_input_tokens": est_in, "max_tokens": max_tokens,
            "simulate": {"input_tokens": act_in, "output_tokens": act_out}}
    if style == "openai":
        path, auth = "/v1/chat/completions", {"authorization": f"Bearer {api_key}"}
    else:
        path, auth = "/v1/messages", {"x-api-key": api_key}
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **auth})
    r = conn.getresponse()
    answer = json.loads(r.read())
    headers = {k.lower(): v for k, v in r.getheaders()}
    network_delay()
    usage = None
    if r.status == 200:
        u = answer["usage"]
        usage = ((u["prompt_tokens"], u["completion_tokens"]) if style == "openai"
                 else (u["input_tokens"], u["output_tokens"]))
    return r.status, headers, usage, float(headers.get("retry-after", 0))


def vary(rng, amount):
    return max(0, round(amount * rng.uniform(1 - VARIATION, 1 + VARIATION)))


class Counts(dict):
    def add(self, key, n=1):
        self[key] = self.get(key, 0) + n


class Run:
    """One scenario's run."""

    def __init__(self, scenario, api, periods):
        self.s = scenario
        self.api = api
        self.periods = periods
        self.model = "goodput/" + scenario.name
        self.api_key = f"key-{scenario.name}-{os.getpid()}"
        self.counts = Counts()

    def busy_period(self, t):
        for start, end in self.periods:
            if start <= t < end:
                return start, end
        return None

    def next_busy(self, t):
        for start, _ in self.periods:
            if start > t:
                return start
        return DURATION

    def acquire_sql(self):
        args = "tokens => %s"
        if self.api["output_tokens"]:
            args += ", output_tokens => %s"
        return ("SELECT granted, lease_id, limited_by FROM ratelimit.rl_acquire(%s, "
                + args + ", max_wait => %s * interval '1 second')")

    def acquire_params(self, est_in, max_tokens, wait):
        if not self.api["output_tokens"]:
            return (self.model, est_in + max_tokens, wait)
        tokens = est_in if self.api["tokens_is_input"] else est_in + max_tokens
        return (self.model, tokens, max_tokens, wait)

    def observe(self, db, headers, status, lease_id, counts):
        if self.api["observe_lease"]:
            row = db.execute("SELECT raised FROM ratelimit.rl_observe(%s, %s, %s, lease_id => %s)",
                             (self.model, Jsonb(headers), status, lease_id)).fetchone()
        else:
            row = db.execute("SELECT raised FROM ratelimit.rl_observe(%s, %s, %s)",
                             (self.model, Jsonb(headers), status)).fetchone()
        counts.add("observed")
        if row[0]:
            counts.add("observe_raised")

    def client(self, i, t0, counts):
        rng = random.Random(SEED * 1000 + i)
        acquire = self.acquire_sql()
        db = http_conn = None
        while True:
            t = time.monotonic() - t0
            if t >= DURATION:
                break
            period = self.busy_period(t)
            if period is None:
                time.sleep(max(0.0, min(self.next_busy(t), DURATION) - t))
                continue
            busy_end = period[1]
            est_in = rng.randint(*INPUT_EST)
            max_tokens = rng.randint(*MAX_TOKENS)
            act_in, act_out = vary(rng, est_in), vary(rng, max_tokens)
            try:
                if db is None:
                    db = psycopg.connect(autocommit=True)
                if http_conn is None:
                    http_conn = self.sim.connection()
                granted, lease_id, limited_by = db.execute(
                    acquire, self.acquire_params(est_in, max_tokens, max(0.001, busy_end - t))
                ).fetchone()
                if not granted:
                    counts.add("not_granted")
                    continue
                try:
                    status, headers, usage, retry_after = call_provider(
                        http_conn, self.s.style, self.api_key, est_in, max_tokens, act_in, act_out)
                except (OSError, http.client.HTTPException, ValueError):
                    # no answer: the reservation stays, the lease goes
                    db.execute("SELECT ratelimit.rl_release(%s)", (lease_id,))
                    raise
                answered = time.monotonic()
                counts.add("calls")
                if self.s.observe == "before":
                    self.observe(db, headers, status, lease_id, counts)
                if status == 200:
                    counts.add("ok")
                    counts.add("input_tokens", usage[0])
                    counts.add("output_tokens", usage[1])
                    overage = usage[0] + usage[1] - est_in - max_tokens
                    if overage > 0:
                        counts.add("overage_tokens", overage)
                    db.execute("SELECT ratelimit.rl_release(%s, input_tokens => %s,"
                               " output_tokens => %s)", (lease_id, usage[0], usage[1]))
                elif status == 429:
                    counts.add("429")
                    counts.setdefault("429_at", []).append(answered - t0)
                    db.execute("SELECT ratelimit.rl_release(%s, input_tokens => 0,"
                               " output_tokens => 0, requests => 0)", (lease_id,))
                else:
                    counts.add("http_errors")
                    db.execute("SELECT ratelimit.rl_release(%s)", (lease_id,))
                if self.s.observe == "after":
                    self.observe(db, headers, status, lease_id, counts)
                # from the provider's answer to the limiter knowing all of it
                counts.setdefault("settle_ms", []).append(1000 * (time.monotonic() - answered))
                if status == 429 and not self.s.observe:
                    # as an SDK would: this client waits, the others do not know
                    time.sleep(max(0.0, min(retry_after, busy_end - (time.monotonic() - t0))))
            except (psycopg.Error, OSError, http.client.HTTPException, ValueError) as e:
                counts.add("errors")
                counts.setdefault("first_error", repr(e))
                for c in (db, http_conn):
                    try:
                        c and c.close()
                    except Exception:
                        pass
                db = http_conn = None
                time.sleep(0.1)
        if db is not None:
            db.close()
        if http_conn is not None:
            http_conn.close()

    def bypass(self, t0, counts):
        """Another user of the key: steady calls at BYPASS of the limits, no
        limiter, from a few threads with a connection each."""
        rate = bypass_rate(self.s)
        rng = random.Random(SEED * 1000 + 999)
        calls = queue.Queue()
        lock = threading.Lock()

        def worker():
            conn = self.sim.connection()
            while (call := calls.get()) is not None:
                try:
                    status, _, usage, _ = call_provider(conn, self.s.style, self.api_key, *call)
                except (OSError, http.client.HTTPException, ValueError):
                    conn.close()
                    conn = self.sim.connection()
                    status, usage = None, None
                with lock:
                    counts.add("calls")
                    if status == 200:
                        counts.add("ok")
                        counts.add("input_tokens", usage[0])
                        counts.add("output_tokens", usage[1])
                    elif status == 429:
                        counts.add("429")
                    else:
                        counts.add("errors")
            conn.close()

        # enough threads for the calls in flight at the longest latency
        workers = [threading.Thread(target=worker)
                   for _ in range(2 + math.ceil(rate * (LATENCY_MS[1] + 2 * NETWORK_MS[1])
                                                 / 1000.0))]
        for th in workers:
            th.start()
        n = 0
        while n / rate < DURATION:
            time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
            est_in, max_tokens = BYPASS_CALL
            calls.put((est_in, max_tokens, vary(rng, est_in), vary(rng, max_tokens)))
            n += 1
        for th in workers:
            calls.put(None)
        for th in workers:
            th.join()

    def run(self, admin):
        s = self.s
        limits = s.limits
        self.sim = Simulator(limits)
        try:
            admin.execute("SELECT ratelimit.rl_drop_model(model) FROM ratelimit.rl_model"
                          " WHERE model = %s", (self.model,))
            named = ", ".join(f"{k} => {int(v)}" for k, v in limits.items())
            admin.execute(f"SELECT ratelimit.rl_define_model(%s, {named}, window_type => %s)",
                          (self.model, s.window_type))
            if s.window_type == "fixed":
                # start at the same second of the minute every time
                time.sleep((FIXED_PHASE - time.time()) % 60)
            counts = [Counts() for _ in range(CLIENTS)]
            bypass_counts = Counts()
            t0 = time.monotonic() + 0.2
            threads = [threading.Thread(target=self.client, args=(i, t0, counts[i]))
                       for i in range(CLIENTS)]
            if s.bypass:
                threads.append(threading.Thread(target=self.bypass, args=(t0, bypass_counts)))
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            total = Counts()
            for c in counts:
                for k, v in c.items():
                    if k == "first_error":
                        total.setdefault(k, v)
                    elif isinstance(v, list):
                        total.setdefault(k, []).extend(v)
                    else:
                        total.add(k, v)
            self.limiter = total
            self.bypassing = bypass_counts
            self.provider = self.sim.stats()["keys"].get(self.api_key, {})
            row = admin.execute(
                "SELECT denied_provider, waits_granted, waits_timed_out, overage_events,"
                " overage_tokens FROM ratelimit.rl_stats WHERE model = %s", (self.model,)).fetchone()
            self.rl_stats = dict(zip(("denied_provider", "waits_granted", "waits_timed_out",
                                      "overage_events", "overage_tokens"), row or ()))
        finally:
            self.sim.stop()
        return self


def bypass_rate(s):
    """Calls a second of the bypassing client: BYPASS of the tightest limit."""
    est_in, max_tokens = BYPASS_CALL
    limits = s.limits
    per_call = {"rpm": 1, "tpm": est_in + max_tokens, "itpm": est_in, "otpm": max_tokens}
    return BYPASS * min(limits[k] / 60.0 / per_call[k] for k in limits)


def ideal(s, periods):
    """The ideal replay (see the top of the file): (requests, tokens) allowed."""
    mean_latency = (LATENCY_MS[0] + LATENCY_MS[1] + 2 * (NETWORK_MS[0] + NETWORK_MS[1])) / 2000.0
    demand = CLIENTS / mean_latency
    mean_in = (INPUT_EST[0] + INPUT_EST[1]) / 2.0
    mean_out = (MAX_TOKENS[0] + MAX_TOKENS[1]) / 2.0
    units = {"rpm": 1.0, "tpm": mean_in + mean_out, "itpm": mean_in, "otpm": mean_out}
    by_units = {"rpm": 1.0, "tpm": sum(BYPASS_CALL), "itpm": BYPASS_CALL[0], "otpm": BYPASS_CALL[1]}
    b = bypass_rate(s) if s.bypass else 0.0
    limits = {k: float(v) for k, v in s.limits.items()}
    level = dict(limits)
    dt = 0.01
    requests = tokens = 0.0
    steps = int(round(DURATION / dt))
    p = 0
    for n in range(steps):
        t = n * dt
        while p < len(periods) and periods[p][1] <= t:
            p += 1
        busy = p < len(periods) and periods[p][0] <= t
        d_clients = demand if busy else 0.0
        want = (d_clients + b) * dt
        if want <= 0:
            for k in level:
                level[k] = min(limits[k], level[k] + limits[k] / 60.0 * dt)
            continue
        # the calls in this step, in the demand's mix of client and bypass calls
        mix = {k: (d_clients * units[k] + b * by_units[k]) / (d_clients + b) for k in limits}
        room = min((level[k] + limits[k] / 60.0 * dt) / mix[k] for k in limits)
        a = max(0.0, min(want, room))
        for k in level:
            level[k] = min(limits[k], level[k] + limits[k] / 60.0 * dt - a * mix[k])
        requests += a
        tok_mix = ((d_clients * (mean_in + mean_out) + b * sum(BYPASS_CALL)) / (d_clients + b))
        tokens += a * tok_mix
    return requests, tokens


def detect_api(admin):
    """What this version of the extension takes."""
    def args(fn):
        row = admin.execute("SELECT proargnames FROM pg_proc p JOIN pg_namespace n"
                            " ON n.oid = p.pronamespace WHERE n.nspname = 'ratelimit'"
                            " AND proname = %s ORDER BY pronargs DESC LIMIT 1", (fn,)).fetchone()
        return set(row[0] or []) if row else set()
    acquire, observe, define = args("rl_acquire"), args("rl_observe"), args("rl_define_model")
    return {"output_tokens": "output_tokens" in acquire,
            "observe_lease": "lease_id" in observe,
            "itpm": "itpm" in define and "otpm" in define,
            "tokens_is_input": True}


def probe_tokens_meaning(admin, api):
    """With output_tokens: is tokens the input (the bench's brief) or the total
    (DESIGN.md: input = tokens - output_tokens)?  Acquire 100 + 40 on a probe
    model and see what its tpm counts."""
    if not api["output_tokens"]:
        return
    # a fixed window: nothing refills between the acquire and the look
    admin.execute("SELECT ratelimit.rl_define_model('goodput/probe', tpm => 1000000,"
                  " window_type => 'fixed')")
    lease = admin.execute("SELECT lease_id FROM ratelimit.rl_acquire('goodput/probe',"
                          " tokens => 100, output_tokens => 40)").fetchone()[0]
    used = admin.execute("SELECT used FROM ratelimit.rl_capacity('goodput/probe')"
                         " WHERE dimension = 'tpm'").fetchone()
    admin.execute("SELECT ratelimit.rl_release(%s)", (lease,))
    admin.execute("SELECT ratelimit.rl_drop_model('goodput/probe')")
    if used is not None:
        api["tokens_is_input"] = abs(used[0] - 140) < abs(used[0] - 100)


def pct(a, b):
    return 100.0 * a / b if b else float("nan")


def report(r, periods):
    lim, byp, prov = r.limiter, r.bypassing, r.provider
    allowed_req, allowed_tok = ideal(r.s, periods)
    accepted = prov.get("accepted", lim.get("ok", 0) + byp.get("ok", 0))
    used_tokens = prov.get("used", {}).get("tokens",
                                            lim.get("input_tokens", 0) + lim.get("output_tokens", 0))
    calls = lim.get("calls", 0) + byp.get("calls", 0)
    refused = lim.get("429", 0) + byp.get("429", 0)
    r.figures = {
        "calls": calls, "429": refused, "429_pct": pct(refused, calls),
        "limiter_calls": lim.get("calls", 0), "limiter_429": lim.get("429", 0),
        "bypass_calls": byp.get("calls", 0), "bypass_429": byp.get("429", 0),
        "util_req": pct(accepted, allowed_req), "util_tok": pct(used_tokens, allowed_tok),
    }
    f = r.figures
    log("%-30s %6d %6d %6.2f %%  %5d/%-5d  %5d/%-5d  %6.1f %%  %6.1f %%" % (
        r.s.name, f["calls"], f["429"], f["429_pct"], f["limiter_429"], f["limiter_calls"],
        f["bypass_429"], f["bypass_calls"], f["util_req"], f["util_tok"]))
    details = [
        f"provider accepted {accepted} calls, {used_tokens} tokens;"
        f" ideal replay {allowed_req:.0f} requests, {allowed_tok:.0f} tokens",
        f"limiter clients: {lim.get('not_granted', 0)} acquires not granted before their busy"
        f" period ended, {lim.get('errors', 0)} errors",
    ]
    if r.s.observe:
        details.append(f"rl_observe: {lim.get('observed', 0)} calls, {lim.get('observe_raised', 0)}"
                       " raised the limiter's usage")
    if r.rl_stats:
        st = r.rl_stats
        details.append(f"rl_stats: denied_provider {st['denied_provider']}, waits granted"
                       f" {st['waits_granted']}, timed out {st['waits_timed_out']}, overage events"
                       f" {st['overage_events']} ({st['overage_tokens']} tokens)")
    if lim.get("settle_ms"):
        ms = sorted(lim["settle_ms"])
        details.append("from the provider's answer to the limiter settled (rl_observe and"
                       f" rl_release): median {ms[len(ms) // 2]:.1f} ms, p99"
                       f" {ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.1f} ms")
    if lim.get("429_at"):
        times = sorted(lim["429_at"])
        bursts = 1 + sum(1 for a, b in zip(times, times[1:]) if b - a > 0.1)
        details.append(f"limiter clients' 429s came in {bursts} bursts (429s < 100 ms apart),"
                       " at " + ", ".join(f"{t:.1f}" for t in times[:12])
                       + (" s ..." if len(times) > 12 else " s"))
    if "first_error" in lim:
        details.append("first error: " + lim["first_error"])
    for line in details:
        log("    " + line)


def main():
    wanted = os.environ.get("SCENARIOS", "").replace(",", " ").split()
    periods = waves(SEED, DURATION)
    with psycopg.connect(autocommit=True) as admin:
        api = detect_api(admin)
        probe_tokens_meaning(admin, api)
        scenarios = [s for s in ALL_SCENARIOS if not wanted or s.name in wanted]
        if not (api["output_tokens"] and api["itpm"]):
            skipped = [s.name for s in scenarios if s.style == "anthropic"]
            scenarios = [s for s in scenarios if s.style != "anthropic"]
            if skipped:
                log("skipped (rl_acquire has no output_tokens, or models no itpm/otpm yet): "
                    + ", ".join(skipped))
        busy = sum(e - s for s, e in periods)
        log(f"{CLIENTS} clients, {DURATION:g} s per scenario, provider latency"
            f" {LATENCY_MS[0]:g}-{LATENCY_MS[1]:g} ms, network {NETWORK_MS[0]:g}-{NETWORK_MS[1]:g} ms"
            f" each way, limits rpm {RPM} tpm {TPM}"
            f" (anthropic: rpm {RPM} itpm {ITPM} otpm {OTPM}), bypass {BYPASS:.0%} of the limits")
        log(f"waves (seed {SEED}): busy {busy:.0f} s of {DURATION:g} s: "
            + ", ".join(f"{s:.0f}-{e:.0f}" for s, e in periods))
        log("rl_acquire output_tokens: %s; rl_observe lease_id: %s" % (
            ("yes, tokens => " + ("input" if api["tokens_is_input"] else "input + output"))
            if api["output_tokens"] else "no", "yes" if api["observe_lease"] else "no"))
        log("")
        log("%-30s %6s %6s %8s  %-11s  %-11s  %8s  %8s" % (
            "scenario", "calls", "429s", "429 %", "limiter", "bypass", "util req", "util tok"))
        results = {}
        for s in scenarios:
            try:
                r = Run(s, api, periods).run(admin)
            except Exception as e:     # a figure missing, never the whole benchmark
                log("%-30s failed: %r" % (s.name, e))
                continue
            report(r, periods)
            results[s.name] = r.figures
    summarize(results)


def summarize(results):
    log("")
    log("summary (utilisation: accepted / ideal replay of the same demand under the same limits)")
    fx, bo = results.get("fixed"), results.get("bucket+observe")
    b = results.get("bucket")
    if fx and bo:
        log("  429s fixed / bucket+observe               : %d / %d" % (fx["429"], bo["429"]))
        log("  utilisation (tokens) bucket+observe / fixed: %.2f" % (bo["util_tok"] / fx["util_tok"]))
    if b and bo:
        log("  utilisation (tokens) bucket+observe / bucket: %.2f" % (bo["util_tok"] / b["util_tok"]))
    if "bucket+observe-after-release" in results and bo:
        a = results["bucket+observe-after-release"]
        log("  utilisation (tokens) observe after / before release: %.3f" % (
            a["util_tok"] / bo["util_tok"]))
    if bo:
        met = bo["429"] == 0 and min(bo["util_req"], bo["util_tok"]) >= 95
        log("  target bucket+observe: no 429 and utilisation >= 95 %%: %s (%d 429s, %.1f %% / %.1f %%)"
            % ("met" if met else "NOT met", bo["429"], bo["util_req"], bo["util_tok"]))
    bp = results.get("bypass+observe")
    if bp:
        lim_pct = pct(bp["limiter_429"], bp["limiter_calls"])
        log("  target bypass+observe: 429s below 1 %% of calls: %s (%.2f %% of all calls;"
            " limiter clients %.2f %%, %s; the bypassing client %.1f %% of its calls)" % (
                "met" if bp["429_pct"] < 1 else "NOT met", bp["429_pct"], lim_pct,
                "met" if lim_pct < 1 else "NOT met", pct(bp["bypass_429"], bp["bypass_calls"])))
    an = results.get("anthropic+observe")
    if an:
        log("  anthropic+observe: %d 429s, utilisation %.1f %% / %.1f %%" % (
            an["429"], an["util_req"], an["util_tok"]))


if __name__ == "__main__":
    main()
