"""pg_ratelimit under Patroni: failovers with SIGKILL, checked against the limits.

Run by tests/ha/run.sh (which installs, builds and sets the arguments):

    failover.py DIR PG_BIN

Settings come from the environment: HA_FAILOVERS (2), HA_SYNC (on: Patroni's
synchronous_mode; strict: synchronous_mode_strict too; off: asynchronous),
HA_TTL (10), HA_LOOP_WAIT (2), HA_RETRY_TIMEOUT (4), HA_CLIENTS (4).

It starts etcd and three PostgreSQL nodes under Patroni on loopback ports,
with all data in DIR, creates the extension and its models on the leader, and
starts clients (client.py) that acquire and release through a multi-host
connection string that follows the leader.  Then, HA_FAILOVERS times: a model
is defined and leases are taken on the leader, the leader's Patroni and
PostgreSQL are killed with SIGKILL (the node is gone), and on the new leader
the configuration, the open leases and the limits are checked; the killed
node is started again and rejoins as a replica.  At the end the clients'
records of every grant, on the old and the new leaders, are checked against
the limits window by window, and what the failovers lost is measured.

Prints "ok N - ..." / "not ok N - ..." per check, "#" lines with the
measurements, and "N passed, N failed"; exits 1 when a check failed.
Whatever happens, every process it started is stopped.
"""

import heapq
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
FAILOVERS = int(os.environ.get("HA_FAILOVERS", "2"))
SYNC = os.environ.get("HA_SYNC", "on")
TTL = int(os.environ.get("HA_TTL", "10"))
LOOP_WAIT = int(os.environ.get("HA_LOOP_WAIT", "2"))
RETRY_TIMEOUT = int(os.environ.get("HA_RETRY_TIMEOUT", "4"))
CLIENTS = int(os.environ.get("HA_CLIENTS", "4"))
SEARCH_PATH = "-csearch_path=public,ratelimit"

# The clients' models: one never limited in practice (the time to the first
# grant is read on it), one with a small rpm and one with a small rpd, both
# used up by the clients within seconds, so that a new leader that forgot
# what the old one granted would grant past them.
MODELS = [
    ("ha_free", "rpm => 100000, rpd => 10000000, price_input => 1.0, price_output => 2.0"),
    ("ha_rpm", "rpm => 30"),
    ("ha_day", "rpd => 40"),
]
CLIENT_PLAN = [["ha_free", 100], ["ha_rpm", 1], ["ha_day", 1]]
RPM, RPD = 30, 40
# per failover: a model defined on the old leader just before the kill,
# with leases held across it
CONC_LIMIT, CONC_SAVED = 6, 3

checks = []


class TooLong(BaseException):
    """The whole run's deadline passed (not caught where waits retry)"""


def check(ok, what):
    checks.append(bool(ok))
    print(f"{'ok' if ok else 'not ok'} {len(checks)} - {what}", flush=True)
    return ok


def note(text):
    for line in text.splitlines():
        print(f"# {line}", flush=True)


def hms(t):
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}"


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for(what, cond, timeout, interval=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            result = cond()
        except Exception:
            result = None
        if result:
            return result
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def connect(port, db="app", timeout=2):
    return psycopg.connect(host="127.0.0.1", port=port, dbname=db, user="postgres",
                           connect_timeout=timeout, autocommit=True, options=SEARCH_PATH)


def query(port, sql, params=None, db="app"):
    with connect(port, db) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None


def children_of(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class Node:
    def __init__(self, base, name, pg_port, api_port):
        self.name, self.pg_port, self.api_port = name, pg_port, api_port
        self.dir = os.path.join(base, name)
        self.data = os.path.join(self.dir, "data")
        self.yml = os.path.join(self.dir, "patroni.yml")
        self.proc = None

    def start(self, pidfile):
        log = open(os.path.join(self.dir, "patroni.log"), "a")
        self.proc = subprocess.Popen(["patroni", self.yml], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        with open(pidfile, "a") as f:
            f.write(f"{self.proc.pid}\n")

    def postmaster(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                pid = int(f.readline())
            return pid if alive(pid) else None
        except (OSError, ValueError):
            return None

    def kill(self):
        """The node dies at once: Patroni, the postmaster and every backend
        get SIGKILL.  Returns the time of the kill."""
        pm = self.postmaster()
        t = time.time()
        self.proc.kill()
        if pm:
            os.kill(pm, signal.SIGSTOP)     # no new backends from here
            for kid in children_of(pm):
                os.kill(kid, signal.SIGKILL)
            os.kill(pm, signal.SIGKILL)
        self.proc.wait()
        return t

    def stop(self):
        """At the end: stop Patroni, then PostgreSQL (immediate shutdown)"""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        pm = self.postmaster()
        if pm:
            os.kill(pm, signal.SIGQUIT)
            deadline = time.time() + 10
            while alive(pm) and time.time() < deadline:
                time.sleep(0.1)
            if alive(pm):
                os.kill(pm, signal.SIGSTOP)
                for kid in children_of(pm):
                    os.kill(kid, signal.SIGKILL)
                os.kill(pm, signal.SIGKILL)

    def patroni_config(self, etcd_port, pg_bin):
        # JSON is YAML: Patroni reads it as its configuration file
        return {
            "scope": "pg_ratelimit_ha",
            "name": self.name,
            "restapi": {"listen": f"127.0.0.1:{self.api_port}",
                        "connect_address": f"127.0.0.1:{self.api_port}"},
            "etcd3": {"hosts": f"127.0.0.1:{etcd_port}"},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": RETRY_TIMEOUT,
                    # promote only the synchronous standby: it has every
                    # high-water mark and lease save the old leader committed
                    "synchronous_mode": SYNC in ("on", "strict"),
                    "synchronous_mode_strict": SYNC == "strict",
                    "maximum_lag_on_failover": 1048576,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {
                            "shared_preload_libraries": "pg_ratelimit",
                            "ratelimit.database": "app",
                            "wal_log_hints": "on",
                            "max_connections": 50,
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.pg_port}",
                "connect_address": f"127.0.0.1:{self.pg_port}",
                "data_dir": self.data,
                "bin_dir": pg_bin,
                "pgpass": os.path.join(self.dir, "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": "ha"},
                    "replication": {"username": "replicator", "password": "ha"},
                },
                "parameters": {"unix_socket_directories": self.dir},
                "pg_hba": ["local all all trust",
                           "host all all 127.0.0.1/32 trust",
                           "host replication replicator 127.0.0.1/32 trust"],
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
            },
        }


class Cluster:
    def __init__(self, base, pg_bin):
        self.base, self.pg_bin = base, pg_bin
        self.pidfile = os.path.join(base, "pids")
        ports = free_ports(8)
        self.etcd_port, self.etcd_peer = ports[0], ports[1]
        self.nodes = [Node(base, f"node{i + 1}", ports[2 + 2 * i], ports[3 + 2 * i]) for i in range(3)]
        self.by_port = {n.pg_port: n for n in self.nodes}
        self.etcd = None
        self.clients = None
        # what the applications use: every node, the one that takes writes
        self.dsn = ("host=" + ",".join("127.0.0.1" for _ in self.nodes)
                    + " port=" + ",".join(str(n.pg_port) for n in self.nodes)
                    + " dbname=app user=postgres target_session_attrs=read-write connect_timeout=2"
                    + f" options='{SEARCH_PATH}'")

    def remember(self, pid):
        with open(self.pidfile, "a") as f:
            f.write(f"{pid}\n")

    def start_etcd(self):
        log = open(os.path.join(self.base, "etcd.log"), "w")
        peer = f"http://127.0.0.1:{self.etcd_peer}"
        self.etcd = subprocess.Popen(
            ["etcd", "--name", "ha", "--data-dir", os.path.join(self.base, "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"ha={peer}", "--initial-cluster-state", "new"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.remember(self.etcd.pid)
        wait_for("etcd", lambda: b'"health":"true"' in urllib.request.urlopen(
            f"http://127.0.0.1:{self.etcd_port}/health", timeout=1).read(), 30)

    def start_nodes(self):
        for node in self.nodes:
            os.makedirs(node.dir, exist_ok=True)
            os.chmod(node.dir, 0o700)
            with open(node.yml, "w") as f:
                json.dump(node.patroni_config(self.etcd_port, self.pg_bin), f, indent=1)
            node.start(self.pidfile)

    def state(self):
        """Patroni's view of the cluster, from any node that answers"""
        for node in self.nodes:
            if node.proc and node.proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{node.api_port}/cluster",
                                                timeout=1) as r:
                        return json.load(r)
                except Exception:
                    continue
        return None

    def healthy(self):
        """Leader, synchronous standby (in synchronous mode) and the other
        replica all running and streaming: returns the members by role"""
        state = self.state()
        if not state:
            return None
        members = state.get("members", [])
        running = [n.name for n in self.nodes if n.proc and n.proc.poll() is None]
        if sorted(m["name"] for m in members) != sorted(running):
            return None
        roles = {}
        for m in members:
            if m.get("state") not in ("running", "streaming"):
                return None
            if m["role"] != "leader" and not isinstance(m.get("lag"), int):
                return None
            roles.setdefault(m["role"], []).append(m["name"])
        if len(roles.get("leader", [])) != 1:
            return None
        if SYNC != "off" and not roles.get("sync_standby"):
            return None
        return roles

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def start_clients(self):
        log = open(os.path.join(self.base, "clients.log"), "w")
        self.clients = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "client.py"), self.dsn, self.base, str(CLIENTS),
             json.dumps(CLIENT_PLAN)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.remember(self.clients.pid)

    def stop_clients(self):
        if self.clients and self.clients.poll() is None:
            self.clients.terminate()
            try:
                self.clients.wait(15)
            except subprocess.TimeoutExpired:
                self.clients.kill()
                self.clients.wait()

    def stop(self):
        self.stop_clients()
        for node in self.nodes:
            try:
                node.stop()
            except Exception as e:
                print(f"# stopping {node.name}: {e}", file=sys.stderr)
        if self.etcd and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait()

    def records(self):
        events = []
        for i in range(CLIENTS):
            path = os.path.join(self.base, f"client-{i}.jsonl")
            if os.path.exists(path):
                with open(path) as f:
                    events.extend(json.loads(line) for line in f if line.strip())
        return events


def status(port):
    """The configuration as rl_status shows it: model and limits"""
    return query(port, "SELECT model, rpm, tpm, rpd, tpd, max_concurrent FROM rl_status ORDER BY model")


def patroni_promotion(node, since):
    """When Patroni on the node took the leader lock after `since` (its log)"""
    with open(os.path.join(node.dir, "patroni.log")) as f:
        for line in f:
            if "promoted self to leader" in line:
                t = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
                if t > since:
                    return t
    return None


def wait_for_kill_moment(port, latest):
    """Wait until the clock is between seconds 5 and `latest` of a minute and
    the clients have used the minute's whole rpm of ha_rpm on the leader:
    the new leader then serves within the minute of the kill, in which it
    must grant nothing more on ha_rpm"""
    wait_for("the moment to kill the leader", lambda: 5 <= time.time() % 60 <= latest and query(
        port, "SELECT requests_minute FROM rl_status WHERE model = 'ha_rpm'")[0][0] >= RPM, 120, 0.2)


def failover(cl, r, rounds):
    """One failover: returns what the final analysis needs"""
    roles = wait_for("a healthy cluster (leader, synchronous standby, replica)", cl.healthy, 120, 0.5)
    old = cl.node(roles["leader"][0])
    sync = roles.get("sync_standby", [])
    note(f"failover {r}: leader {old.name}, synchronous standby {', '.join(sync) or '(none)'}")

    model = f"ha_conc_{r}"
    with psycopg.connect(cl.dsn, autocommit=True) as conn:
        assert conn.info.port == old.pg_port
        # configuration defined on the old leader, committed just before the kill
        conn.execute(f"SELECT rl_define_model('{model}', max_concurrent => {CONC_LIMIT})")
        held = [conn.execute(f"SELECT lease_id FROM rl_acquire('{model}')").fetchone()[0]
                for _ in range(CONC_SAVED)]
        # saved by the worker (a synchronous commit: on the standby too)
        wait_for("the leases saved", lambda: conn.execute(
            "SELECT count(*) FROM rl_lease_state WHERE lease_id = ANY(%s)", (held,)).fetchone()[0]
            == len(held), 10)
        config = status(old.pg_port)
        wait_for_kill_moment(old.pg_port, max(10, 60 - (TTL + 20)))
        # one more lease, granted after the last save: the kill comes first
        unsaved = conn.execute(f"SELECT lease_id FROM rl_acquire('{model}')").fetchone()[0]
        t_kill = old.kill()
    note(f"failover {r}: {old.name} killed with SIGKILL at {hms(t_kill)} UTC")

    survivors = [n for n in cl.nodes if n is not old and n.proc and n.proc.poll() is None]

    def promoted():
        for n in survivors:
            try:
                if not query(n.pg_port, "SELECT pg_is_in_recovery()", db="postgres")[0][0]:
                    return n
            except psycopg.Error:
                pass
        return None
    new = wait_for("a new leader", promoted, 120, 0.05)
    t_promoted = patroni_promotion(new, t_kill) or time.time()
    note(f"failover {r}: {new.name} took the leader lock {t_promoted - t_kill:.1f} s after the kill")
    if SYNC != "off":
        check(new.name in sync, f"failover {r}: the new leader {new.name} was the synchronous standby")

    with wait_for("a connection to the new leader",
                  lambda: psycopg.connect(cl.dsn, autocommit=True), 60, 0.1) as conn:
        check(conn.info.port == new.pg_port, f"failover {r}: the connection string reaches the new leader")
        # what the new leader restored of ha_free, to compare with the
        # clients' records (those granted on it before this read removed)
        t_read = time.time()
        restored = conn.execute(
            "SELECT granted, requests_day FROM rl_status WHERE model = 'ha_free'").fetchone()
        check(status(new.pg_port) == config,
              f"failover {r}: the configuration defined on the old leader is in force"
              f" ({len(config)} models, {model} included)")
        open_ids = {row[0] for row in conn.execute(
            "SELECT lease_id FROM rl_leases WHERE model = %s", (model,)).fetchall()}
        check(set(held) <= open_ids <= set(held) | {unsaved},
              f"failover {r}: the {CONC_SAVED} saved leases are open on the new leader"
              f" (the one granted after the last save: {'also' if unsaved in open_ids else 'not'})")
        more = []
        while True:
            granted, lease = conn.execute(f"SELECT granted, lease_id FROM rl_acquire('{model}')").fetchone()
            if not granted:
                break
            more.append(lease)
        before = CONC_SAVED + 1
        check(before + len(more) <= CONC_LIMIT,
              f"failover {r}: max_concurrent {CONC_LIMIT}: {before} leases held across the failover"
              f" + {len(more)} granted after <= {CONC_LIMIT}")
        lost_slots = CONC_LIMIT - before - len(more)
        released = [conn.execute("SELECT released FROM rl_release(%s)", (lease,)).fetchone()[0]
                    for lease in held]
        check(all(released), f"failover {r}: the saved leases are released on the new leader by lease_id")
        late = conn.execute("SELECT released FROM rl_release(%s)", (unsaved,)).fetchone()[0]
        for lease in more:
            conn.execute("SELECT rl_release(%s)", (lease,))
        # every lease is released now; the slots of restored leases stay
        # held until the lease horizon (they may have been released before
        # the kill, and their slots taken by leases the failover forgot)
        free_now = conn.execute(
            "SELECT slots FROM rl_capacity(%s) WHERE dimension = 'concurrency'", (model,)).fetchone()[0]
    note(f"failover {r}: slots of {model} ({CONC_LIMIT}): {CONC_SAVED} saved leases + 1 granted after"
         f" the last save held across; {len(more)} granted after the failover, {lost_slots} more held"
         f" (headroom); the lease granted after the last save released on the new leader: {late};"
         f" free after every lease was released: {free_now}")

    # the killed node comes back and rejoins as a replica (the next failover
    # waits for it)
    old.start(cl.pidfile)
    if r == rounds:
        roles = wait_for(f"{old.name} to rejoin", cl.healthy, 120, 0.5)
        check(old.name not in roles["leader"], f"failover {r}: {old.name} rejoined as a replica")
    return {"round": r, "old": old, "new": new, "t_kill": t_kill, "t_promoted": t_promoted,
            "lost_slots": lost_slots, "t_read": t_read, "restored": restored}


def edf_fits(intervals, limit):
    """Grants whose window is only known to lie in [lo, hi] (the call
    straddled a boundary): can each be put in a window of its range with no
    window above limit?  Earliest deadline first decides it.  Returns
    (fits, counts per window)."""
    intervals = sorted(intervals)
    counts, heap, i = {}, [], 0
    windows = sorted({w for lo, hi in intervals for w in range(lo, hi + 1)})
    for w in windows:
        while i < len(intervals) and intervals[i][0] <= w:
            heapq.heappush(heap, intervals[i][1])
            i += 1
        while heap and counts.get(w, 0) < limit:
            heapq.heappop(heap)
            counts[w] = counts.get(w, 0) + 1
        if heap and heap[0] <= w:
            return False, counts
    return True, counts


def analyse(cl, rounds, final_port):
    events = cl.records()
    grants = [e for e in events if e["ev"] == "grant"]
    releases = [e for e in events if e["ev"] == "release"]
    name = {n.pg_port: n.name for n in cl.nodes}

    prev_missing = prev_excess = 0
    for fo in rounds:
        r, old, new, t_kill = fo["round"], fo["old"], fo["new"], fo["t_kill"]
        after = [g["recv"] for g in grants if g["port"] == new.pg_port and g["recv"] > t_kill]
        before = [g["recv"] for g in grants if g["port"] == old.pg_port and g["recv"] <= t_kill]
        if check(after, f"failover {r}: the clients were granted on the new leader"):
            fo["first_grant"] = min(after) - t_kill
            note(f"failover {r}: last grant on {old.name} {t_kill - max(before):.3f} s before the kill;"
                 f" first grant on {new.name} {fo['first_grant']:.1f} s after it"
                 f" (leader lock at {fo['t_promoted'] - t_kill:.1f} s)")
        # ha_free as restored: its totals lost the grants of the last moments
        # (after the last save), its day window counts more than was granted
        # (the headroom of its last mark)
        free_before = sum(1 for g in grants if g["model"] == "ha_free" and g["recv"] <= t_kill)
        free_new = sum(1 for g in grants if g["model"] == "ha_free" and g["port"] == new.pg_port
                       and t_kill < g["t1"] < fo["t_read"])
        granted_total, requests_day = fo["restored"]
        missing = free_before + free_new - granted_total
        excess = requests_day - free_before - free_new
        rate = sum(1 for g in grants if g["model"] == "ha_free" and t_kill - 2 < g["recv"] <= t_kill) / 2
        # what the earlier failovers lost is in these figures too
        fo["missing"], fo["excess"] = missing, excess
        missing -= prev_missing
        excess -= prev_excess
        prev_missing, prev_excess = fo["missing"], fo["excess"]
        note(f"failover {r}: ha_free's totals lost {missing} grants (about {missing / rate if rate else 0:.1f} s"
             f" of its {rate:.0f} grants a second before the kill); its day window counts {excess} requests"
             f" more than were granted (about {excess / rate if rate else 0:.1f} s of them)")
        # the minute of the kill: what was granted on ha_rpm before and after
        minute = int(t_kill // 60)
        in_minute = [g for g in grants if g["model"] == "ha_rpm"
                     and int(g["sent"] // 60) == minute and int(g["t1"] // 60) == minute]
        by_old = sum(1 for g in in_minute if g["recv"] <= t_kill)
        by_new = sum(1 for g in in_minute if g["recv"] > t_kill)
        served = bool(after) and int(min(after) // 60) == minute
        check(by_old + by_new <= RPM,
              f"failover {r}: ha_rpm in the minute of the kill: {by_old} granted before it"
              f" + {by_new} after <= rpm {RPM}"
              + ("" if served else " (the new leader served only from the next minute)"))

    for model, limit, length, window in (("ha_rpm", RPM, 60, "minute"), ("ha_day", RPD, 86400, "day")):
        spans = [(int(g["sent"] // length), int(g["t1"] // length)) for g in grants if g["model"] == model]
        fits, counts = edf_fits(spans, limit)
        straddling = sum(1 for lo, hi in spans if lo != hi)
        check(fits, f"{model}: every {window} of the run, from every leader, granted at most {limit}"
              f" ({len(spans)} grants in {len(counts)} {window}s, the largest {max(counts.values(), default=0)};"
              f" {straddling} calls straddled a boundary)")

    # what the failovers lost, read on the last leader after the clients stopped
    free = [g for g in grants if g["model"] == "ha_free"]
    days = {int(g["t1"] // 86400) for g in free}
    (requests_day, granted_total, cost_today), = query(
        final_port, "SELECT requests_day, granted, cost_today FROM rl_status WHERE model = 'ha_free'")
    if len(days) == 1 and int(time.time() // 86400) in days:
        check(requests_day >= len(free),
              f"ha_free: every grant counted in the day window ({requests_day} counted >= {len(free)}"
              f" granted to the clients)")
        client_cost = sum(e["cost"] or 0 for e in releases if e["model"] == "ha_free" and e["released"])
        per_release = min((e["cost"] for e in releases if e["model"] == "ha_free" and e["cost"]),
                          default=0)
        note(f"in all: ha_free's day window counts {requests_day - len(free)} requests more than the"
             f" {len(free)} granted; its totals {len(free) - granted_total} grants fewer; its cost_today"
             f" the usage of {(client_cost - float(cost_today)) / per_release if per_release else 0:.0f}"
             f" releases less than the clients released")
    else:
        note("the run crossed a UTC day: the day's totals are not compared")
    # the cost of synchronous replication to an acquire: some wait for a
    # new mark, which is one synchronous commit of the worker
    for model in ("ha_free", "ha_rpm"):
        times = sorted(g["recv"] - g["sent"] for g in grants if g["model"] == model)
        if times:
            note(f"{model}: granted acquires took {1000 * times[len(times) // 2]:.1f} ms (median),"
                 f" {1000 * times[len(times) * 99 // 100]:.1f} ms (99th percentile),"
                 f" {1000 * times[-1]:.1f} ms (longest)")
    late = [e for e in releases if e["late"]]
    note(f"leases the clients held at a kill and released on the new leader: {len(late)},"
         f" of which {sum(1 for e in late if not e['released'])} were not known there"
         f" (granted after the last save, or released just before the kill)")
    note("per failover: " + "; ".join(
        f"{fo['old'].name} -> {fo['new'].name}: leader lock {fo['t_promoted'] - fo['t_kill']:.1f} s,"
        f" first grant {fo.get('first_grant', float('nan')):.1f} s" for fo in rounds))
    note(f"(Patroni ttl {TTL} s, loop_wait {LOOP_WAIT} s, retry_timeout {RETRY_TIMEOUT} s,"
         f" synchronous mode {SYNC}; {name.get(final_port)} leads at the end)")


def main():
    base, pg_bin = sys.argv[1], sys.argv[2]
    with open(os.path.join(base, "orchestrator.pid"), "w") as f:
        f.write(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    def too_long(*_):
        raise TooLong("the run took more than 10 minutes")
    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(600)
    cl = Cluster(base, pg_bin)
    t_start = time.time()
    try:
        cl.start_etcd()
        cl.start_nodes()
        roles = wait_for("the cluster to bootstrap", cl.healthy, 180, 0.5)
        leader = cl.node(roles["leader"][0])
        note(f"etcd on 127.0.0.1:{cl.etcd_port}; Patroni nodes "
             + ", ".join(f"{n.name} (PostgreSQL {n.pg_port}, REST {n.api_port})" for n in cl.nodes)
             + f"; leader {leader.name} after {time.time() - t_start:.1f} s")
        query(leader.pg_port, "CREATE DATABASE app", db="postgres")
        wait_for("the pg_ratelimit worker", lambda: query(
            leader.pg_port, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'",
            db="postgres")[0][0] == 1, 30)
        with connect(leader.pg_port) as conn:
            conn.execute("CREATE EXTENSION pg_ratelimit")
            for model, limits in MODELS:
                conn.execute(f"SELECT rl_define_model('{model}', {limits})")
        cl.start_clients()
        time.sleep(2)
        rounds = [failover(cl, r, FAILOVERS) for r in range(1, FAILOVERS + 1)]
        time.sleep(1)
        cl.stop_clients()
        final = wait_for("a leader", lambda: cl.healthy() and cl.healthy()["leader"][0], 30)
        analyse(cl, rounds, cl.node(final).pg_port)
    except (Exception, TooLong) as e:
        check(False, f"the run completed ({type(e).__name__}: {e})")
    finally:
        cl.stop()
        # all stopped: nothing for run.sh to clean up after us
        if os.path.exists(cl.pidfile):
            os.unlink(cl.pidfile)
    note(f"{time.time() - t_start:.0f} s in all")
    passed = sum(checks)
    print(f"{passed} passed, {len(checks) - passed} failed")
    sys.exit(0 if checks and all(checks) else 1)


if __name__ == "__main__":
    main()
