"""pg_ratelimit behind PgBouncer in transaction pooling, with psycopg 3.

Waiting acquires go through one pool and releases through another, so a
release never queues behind the waiters that hold the first pool's server
connections.  pgbouncer.ini:

    [databases]
    app         = host=/var/run/postgresql dbname=app
    app_release = host=/var/run/postgresql dbname=app pool_size=1

    [pgbouncer]
    pool_mode = transaction
    default_pool_size = 20

Usage:
    python3 pgbouncer_psycopg.py APP_DSN RELEASE_DSN MODEL [WORKERS [JOBS]]

    python3 pgbouncer_psycopg.py "host=127.0.0.1 port=6432 dbname=app" \\
        "host=127.0.0.1 port=6432 dbname=app_release" openai/gpt-4o 8 10

WORKERS threads (default 4) each run JOBS jobs (default 10): acquire with
max_wait, a stand-in for the provider call, release with the usage.  Exits 0
when every job was granted and released.
"""

import sys
import threading
import time

import psycopg


def connect(dsn):
    # Transaction pooling: consecutive statements may run on different server
    # connections.  autocommit gives the server connection back to the pool
    # after every statement; prepare_threshold=None stops psycopg from
    # preparing statements on whichever server connection it has at the time
    # ("prepared statement "_pg3_0" already exists" when another client's
    # psycopg prepared it there, "does not exist" when it runs elsewhere).
    return psycopg.connect(dsn, autocommit=True, prepare_threshold=None)


def provider_call(prompt):
    """Stand-in for the LLM provider: returns (input, output, cached) tokens."""
    time.sleep(0.02)
    return len(prompt.split()), 42, 0


def run_job(acquire_conn, release_conn, model, prompt):
    """One rate-limited call; True when it was granted and released."""
    granted, lease_id, retry_after, limited_by = acquire_conn.execute(
        "SELECT granted, lease_id, retry_after, limited_by"
        " FROM ratelimit.rl_acquire(%s, tokens => %s, max_wait => '30 seconds')",
        (model, 1200)).fetchone()
    if not granted:
        print(f"denied by {limited_by}, retry after {retry_after}", file=sys.stderr)
        return False
    try:
        input_tokens, output_tokens, cached_tokens = provider_call(prompt)
    except Exception:
        # release without usage keeps the estimate
        release_conn.execute("SELECT * FROM ratelimit.rl_release(%s)", (lease_id,))
        raise
    released, = release_conn.execute(
        "SELECT released FROM ratelimit.rl_release(%s, input_tokens => %s,"
        " output_tokens => %s, cached_tokens => %s)",
        (lease_id, input_tokens, output_tokens, cached_tokens)).fetchone()
    return released


def worker(app_dsn, release_dsn, model, jobs, results):
    with connect(app_dsn) as acquire_conn, connect(release_dsn) as release_conn:
        for i in range(jobs):
            results.append(run_job(acquire_conn, release_conn, model, f"prompt number {i}"))


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    app_dsn, release_dsn, model = sys.argv[1:4]
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    jobs = int(sys.argv[5]) if len(sys.argv) > 5 else 10

    results = []
    threads = [threading.Thread(target=worker, args=(app_dsn, release_dsn, model, jobs, results))
               for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = sum(1 for r in results if r)
    print(f"{done} of {workers * jobs} jobs granted and released")
    sys.exit(0 if done == workers * jobs else 1)


if __name__ == "__main__":
    main()
