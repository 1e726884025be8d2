"""Clients of pg_ratelimit that follow the Patroni leader (tests/ha/failover.py).

Usage: client.py DSN OUTDIR THREADS PLAN_JSON

Each of THREADS threads has a connection of its own, made with DSN: a libpq
multi-host string with target_session_attrs=read-write, so that it reaches
whichever node is the leader now.  In a loop it acquires on every model of
PLAN_JSON ([[model, tokens], ...]) and releases each grant with its usage
20 ms later (the provider call).  When the connection breaks it connects
again (to the new leader) and releases there, by lease_id, the leases it was
holding.  It stops on SIGTERM.

Every event goes to OUTDIR/client-N.jsonl, one JSON object a line, with the
node's port and the client's clock (time.time(), the clock the server reads
too: they run on the same host):

  grant    model, lease, sent (before the call), t1 (the limiter's clock
           just after the grant), recv (when the answer arrived), port
  release  model, lease, released, cost, recv, port, late (released on a
           later connection than the grant's)
  connect  recv, port
  lost     recv, error (the connection broke)
  summary  denied per model, at the end
"""

import json
import signal
import sys
import threading
import time

import psycopg

ACQUIRE = ("SELECT granted, lease_id, extract(epoch FROM rl_clock())::float8"
           " FROM rl_acquire(%s, tokens => %s)")
# actual usage below the estimate: the window gets a refund
RELEASE = ("SELECT released, cost"
           " FROM rl_release(%s, input_tokens => %s, output_tokens => %s)")

stop = threading.Event()


def connect(dsn, log):
    """Connect to the leader, retrying while there is none"""
    while not stop.is_set():
        try:
            conn = psycopg.connect(dsn, autocommit=True)
            log({"ev": "connect", "recv": time.time(), "port": conn.info.port})
            return conn
        except psycopg.OperationalError:
            time.sleep(0.1)
    return None


def run(dsn, path, plan):
    out = open(path, "a", buffering=1)

    def log(event):
        out.write(json.dumps(event) + "\n")

    denied = {model: 0 for model, _ in plan}
    pending = []                # (model, lease, tokens): granted, not yet released
    conn = None
    while not stop.is_set():
        if conn is None:
            conn = connect(dsn, log)
            if conn is None:
                break
        port = conn.info.port
        try:
            # leases granted before the connection broke: release them here
            while pending:
                model, lease, tokens = pending[0]
                released, cost = conn.execute(
                    RELEASE, (lease, tokens * 6 // 10, tokens * 2 // 10)).fetchone()
                log({"ev": "release", "model": model, "lease": lease, "released": released,
                     "cost": float(cost) if cost is not None else None,
                     "recv": time.time(), "port": port, "late": True})
                pending.pop(0)
            for model, tokens in plan:
                sent = time.time()
                granted, lease, t1 = conn.execute(ACQUIRE, (model, tokens)).fetchone()
                recv = time.time()
                if not granted:
                    denied[model] += 1
                    continue
                log({"ev": "grant", "model": model, "lease": lease, "sent": sent, "t1": t1,
                     "recv": recv, "port": port})
                pending.append((model, lease, tokens))
                time.sleep(0.02)        # the provider call
                released, cost = conn.execute(
                    RELEASE, (lease, tokens * 6 // 10, tokens * 2 // 10)).fetchone()
                log({"ev": "release", "model": model, "lease": lease, "released": released,
                     "cost": float(cost) if cost is not None else None,
                     "recv": time.time(), "port": port, "late": False})
                pending.pop()
            time.sleep(0.05)
        except psycopg.Error as e:
            # the node died, or is no longer the leader (25006): find the leader
            log({"ev": "lost", "recv": time.time(), "port": port, "error": str(e).strip()[:200]})
            try:
                conn.close()
            except Exception:
                pass
            conn = None
    # leases still pending (the run stopped during an outage) are left to expire
    log({"ev": "summary", "denied": denied, "pending": len(pending)})
    out.close()


def main():
    dsn, outdir, threads, plan = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    workers = [threading.Thread(target=run, args=(dsn, f"{outdir}/client-{i}.jsonl", plan))
               for i in range(threads)]
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        for w in workers:
            w.join(0.2)


if __name__ == "__main__":
    main()
