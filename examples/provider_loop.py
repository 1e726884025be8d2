"""LLM calls under pg_ratelimit that tell the limiter what the provider said.

    python3 examples/provider_loop.py [MODEL [JOBS]]

Connects to $DATABASE_URL, or by default to the database ratelimit_demo on the
server that PGHOST, PGPORT and PGUSER name, and calls an OpenAI-compatible
chat endpoint: $OPENAI_BASE_URL (default https://api.openai.com/v1) with the
key $OPENAI_API_KEY.  Each of JOBS calls (default 3) acquires a lease on
MODEL (default openai/gpt-4.1-mini), waiting up to 30 s in the server, calls
the provider, gives the response's headers and status to rl_observe, and
releases the lease with the usage the provider reported.  After a 429 the
model pauses for every session until the provider's retry-after: the next
acquire waits that out in the server, and the call is made again.
"""
import json
import os
import sys
import urllib.error
import urllib.request

import psycopg
from psycopg.types.json import Jsonb

DSN = os.environ.get("DATABASE_URL", "postgresql:///ratelimit_demo")
MODEL = sys.argv[1] if len(sys.argv) > 1 else "openai/gpt-4.1-mini"
JOBS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
BASE_URL = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
MAX_TOKENS = 200


def chat(prompt):
    """POST /chat/completions: (status, headers, body), for a 429 too."""
    request = urllib.request.Request(
        f"{BASE_URL}/chat/completions", method="POST",
        data=json.dumps({"model": MODEL.split("/")[-1], "max_tokens": MAX_TOKENS,
                         "messages": [{"role": "user", "content": prompt}]}).encode(),
        headers={"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.load(error)


def call_llm(conn, prompt):
    # what the provider counts: the prompt (about 4 characters a token) and
    # max_tokens; tokens is the whole, output_tokens the output's part of it
    prompt_tokens = len(prompt) // 4 + 1
    while True:
        granted, lease_id, limited_by = conn.execute(
            "SELECT granted, lease_id, limited_by FROM ratelimit.rl_acquire(%s,"
            " tokens => %s, output_tokens => %s, max_wait => '30 seconds')",
            (MODEL, prompt_tokens + MAX_TOKENS, MAX_TOKENS)).fetchone()
        if not granted:
            raise RuntimeError(f"rate limited by {limited_by}")
        try:
            status, headers, body = chat(prompt)
        except Exception:
            conn.execute("SELECT * FROM ratelimit.rl_release(%s)", (lease_id,))
            raise
        # every session now sees what the provider has left, and a 429's pause
        cooldown_until, = conn.execute(
            "SELECT cooldown_until FROM ratelimit.rl_observe(%s, %s, %s)",
            (MODEL, Jsonb(headers), status)).fetchone()
        if status == 429:
            # the provider took nothing: give it all back, and try again
            conn.execute("SELECT * FROM ratelimit.rl_release(%s, input_tokens => 0,"
                         " output_tokens => 0, requests => 0)", (lease_id,))
            print(f"429 from the provider: every session waits until {cooldown_until}", flush=True)
            continue
        if status != 200:
            conn.execute("SELECT * FROM ratelimit.rl_release(%s)", (lease_id,))
            raise RuntimeError(f"the provider answered {status}: {body}")
        usage = body["usage"]
        conn.execute("SELECT * FROM ratelimit.rl_release(%s, input_tokens => %s, output_tokens => %s)",
                     (lease_id, usage["prompt_tokens"], usage["completion_tokens"]))
        print(f"lease {lease_id}: {usage['total_tokens']} tokens,"
              f" the provider has {headers.get('x-ratelimit-remaining-tokens')} left", flush=True)
        return body["choices"][0]["message"]["content"]


# autocommit: each call is a statement of its own, no transaction is left open
with psycopg.connect(DSN, autocommit=True) as conn:
    for i in range(JOBS):
        print(call_llm(conn, f"prompt {i}"))
