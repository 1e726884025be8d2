"""LLM calls under pg_ratelimit with psycopg 3, waiting for capacity in the server.

    python3 examples/wait_in_server.py [MODEL [JOBS]]

Connects to $DATABASE_URL, or by default to the database ratelimit_demo on the
server that PGHOST, PGPORT and PGUSER name.  Each of JOBS jobs (default 3)
acquires a lease on MODEL (default: the model of Getting started), waiting up
to 30 s in the server, calls the provider and releases the lease with the
usage the provider reported.
"""
import os
import sys
import time
from types import SimpleNamespace

import psycopg

DSN = os.environ.get("DATABASE_URL", "postgresql:///ratelimit_demo")
MODEL = sys.argv[1] if len(sys.argv) > 1 else "openai/gpt-4.1"
JOBS = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def provider_call(prompt):
    """A STAND-IN for your provider's client: replace it with the real call."""
    time.sleep(0.05)
    usage = SimpleNamespace(input_tokens=800, output_tokens=250, cached_tokens=0)
    return SimpleNamespace(text=f"an answer to {prompt!r}", usage=usage)


def call_llm(conn, prompt, estimate=1200):
    granted, lease_id, retry_after, limited_by = conn.execute(
        "SELECT granted, lease_id, retry_after, limited_by"
        " FROM ratelimit.rl_acquire(%s, tokens => %s, max_wait => '30 seconds')",
        (MODEL, estimate)).fetchone()
    if not granted:
        raise RuntimeError(f"rate limited by {limited_by}, retry after {retry_after}")
    try:
        response = provider_call(prompt)
    except Exception:
        # a release without usage keeps the estimate
        conn.execute("SELECT * FROM ratelimit.rl_release(%s)", (lease_id,))
        raise
    usage = response.usage
    released, refunded, cost = conn.execute(
        "SELECT released, tokens_refunded, cost FROM ratelimit.rl_release(%s,"
        " input_tokens => %s, output_tokens => %s, cached_tokens => %s)",
        (lease_id, usage.input_tokens, usage.output_tokens, usage.cached_tokens)).fetchone()
    print(f"lease {lease_id}: released {released}, {refunded} tokens refunded, cost {cost}")
    return response


# autocommit: each call is a statement of its own, no transaction is left open
with psycopg.connect(DSN, autocommit=True) as conn:
    for i in range(JOBS):
        print(call_llm(conn, f"prompt {i}").text)
