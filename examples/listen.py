"""LLM calls under pg_ratelimit with psycopg 3, waiting for capacity in the client.

    python3 examples/listen.py [MODEL [JOBS]]

Connects to $DATABASE_URL, or by default to the database ratelimit_demo on the
server that PGHOST, PGPORT and PGUSER name, and LISTENs on rl_capacity.  Each
of JOBS jobs (default 3) tries to acquire a lease on MODEL (default: the model
of Getting started); when denied, it sleeps until a notification names the
model and tries again.  Then it calls the provider and releases the lease with
the usage the provider reported.
"""
import json
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


def acquire_when_notified(conn, heard, estimate=1200):
    while True:
        heard.clear()
        granted, lease_id, limited_by = conn.execute(
            "SELECT granted, lease_id, limited_by FROM ratelimit.rl_acquire(%s, tokens => %s)",
            (MODEL, estimate)).fetchone()
        if granted:
            return lease_id
        print(f"denied by {limited_by}, waiting for a notification", flush=True)
        if MODEL in heard:
            continue            # it arrived while the acquire ran
        for notify in conn.notifies():
            if json.loads(notify.payload)["model"] == MODEL:
                break


with psycopg.connect(DSN, autocommit=True) as conn:
    # Notifications that arrive while a statement runs go to the handler (one
    # for the connection), those that arrive while we sleep to conn.notifies()
    heard = set()
    conn.add_notify_handler(lambda notify: heard.add(json.loads(notify.payload)["model"]))
    conn.execute("LISTEN rl_capacity")
    for i in range(JOBS):
        lease_id = acquire_when_notified(conn, heard)
        try:
            response = provider_call(f"prompt {i}")
        except Exception:
            conn.execute("SELECT * FROM ratelimit.rl_release(%s)", (lease_id,))
            raise
        usage = response.usage
        released, = conn.execute(
            "SELECT released FROM ratelimit.rl_release(%s, input_tokens => %s,"
            " output_tokens => %s, cached_tokens => %s)",
            (lease_id, usage.input_tokens, usage.output_tokens, usage.cached_tokens)).fetchone()
        print(f"lease {lease_id}: released {released}")
