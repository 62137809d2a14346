#!/usr/bin/env python3
"""Helpers of bench/keeld.sh (python3 stdlib only; loopback only).

  keeld_guess.py attack --port P --sources 127.0.0.2,... --conns 50 --seconds S
      An online password-guessing attacker: --conns keep-alive TLS
      connections spread round-robin over --sources, each POSTing wrong
      passwords to /api/v1/session as fast as keeld lets it. On 429 a
      connection sleeps retry_after (so that all of a source's connections
      fire together when the wait ends: a race on the throttle would show).
      Prints JSON: guesses (answers 401 = passwords actually tried), 429s,
      other answers, per-source guesses.

  keeld_guess.py owner --port P --password PW --count N [--interval S]
      N logins of the owner from 127.0.0.1 (a clean source), each on a fresh
      TLS connection, one after the other; JSON with the latencies (ms).

  keeld_guess.py argon2 --count N --t 2 --m 19456
      N runs of the argon2 CLI (Debian's `argon2`) on the same parameters,
      timed the same way (process start included); JSON with the latencies.

  keeld_guess.py theory --seconds S --sources K [--free 3 --base 1 --max 300 --global 20]
      The most guesses the throttle of keel/auth.h allows K sources in S
      seconds, hashing taking no time: per source, free failures, then one
      guess per backoff (base * 2^(failures - free), capped at max, counted
      from the last failure); globally at most `global` evaluations per
      rolling minute by sources with a failure on record.

  keeld_guess.py ctxt --pid PID --seconds S
      keeld's context switches (voluntary + involuntary, all threads) over S
      seconds, and its VmRSS; JSON.
"""
import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time


def ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


class Conn:
    """One keep-alive HTTPS connection from a given source address."""

    def __init__(self, port, src, timeout=30):
        self.port, self.src, self.timeout = port, src, timeout
        self.s = None

    def open(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout, source_address=(self.src, 0))
        self.s = ctx().wrap_socket(raw)
        self.buf = b""

    def close(self):
        if self.s is not None:
            try:
                self.s.close()
            except OSError:
                pass
        self.s = None

    def request(self, method, path, body=None, close=False, headers=()):
        if self.s is None:
            self.open()
        h = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
        for k, v in headers:
            h += "%s: %s\r\n" % (k, v)
        data = b""
        if body is not None:
            data = json.dumps(body).encode()
            h += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
        if close:
            h += "Connection: close\r\n"
        self.s.sendall(h.encode() + b"\r\n" + data)
        while b"\r\n\r\n" not in self.buf:
            b = self.s.recv(65536)
            if not b:
                raise ConnectionError("closed before the response")
            self.buf += b
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        while len(rest) < n:
            b = self.s.recv(65536)
            if not b:
                raise ConnectionError("closed in the body")
            rest += b
        self.buf = rest[n:]
        body = rest[:n]
        if close or hdrs.get("connection", "").lower() == "close":
            self.close()
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        return status, hdrs, doc


def attack(a):
    sources = a.sources.split(",")
    end = time.monotonic() + a.seconds
    lock = threading.Lock()
    st = {"guesses": 0, "throttled": 0, "other": {}, "errors": {}, "per_source": {s: 0 for s in sources},
          "first_guess_at": {}, "guess_times": []}
    t0 = time.monotonic()

    def worker(i):
        src = sources[i % len(sources)]
        c = Conn(a.port, src)
        n = 0
        while time.monotonic() < end:
            n += 1
            try:
                code, hdrs, doc = c.request("POST", "/api/v1/session",
                                            {"username": "admin", "password": "guess-%d-%d" % (i, n)})
            except Exception as e:
                c.close()
                with lock:
                    k = type(e).__name__
                    st["errors"][k] = st["errors"].get(k, 0) + 1
                time.sleep(0.2)
                continue
            with lock:
                if code == 401:
                    st["guesses"] += 1
                    st["per_source"][src] += 1
                    st["guess_times"].append(round(time.monotonic() - t0, 3))
                elif code == 429:
                    st["throttled"] += 1
                else:
                    st["other"][str(code)] = st["other"].get(str(code), 0) + 1
            if code == 200:
                raise SystemExit("a guess logged in: the bench device's password is guessable")
            if code == 429:
                ra = (doc or {}).get("retry_after") or int(hdrs.get("retry-after", "1"))
                time.sleep(max(0.0, min(float(ra), end - time.monotonic())))
        c.close()

    ths = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.conns)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(a.seconds + 60)
    st["seconds"] = round(time.monotonic() - t0, 3)
    st["sources"] = len(sources)
    st["conns"] = a.conns
    json.dump(st, sys.stdout)


def pctl(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))]


def summary(lat):
    return {"n": len(lat), "p50_ms": pctl(lat, 50), "p99_ms": pctl(lat, 99),
            "min_ms": min(lat) if lat else None, "max_ms": max(lat) if lat else None, "all_ms": lat}


def owner(a):
    lat, errs = [], {}
    end = time.monotonic() + a.max_seconds
    for i in range(a.count):
        if time.monotonic() > end:
            break
        t0 = time.monotonic()
        c = Conn(a.port, "127.0.0.1")
        try:
            code, _, doc = c.request("POST", "/api/v1/session", {"username": "admin", "password": a.password}, close=True)
        except Exception as e:
            code = type(e).__name__
        finally:
            c.close()
        dt = (time.monotonic() - t0) * 1000
        if code == 200:
            lat.append(round(dt, 2))
        else:
            errs[str(code)] = errs.get(str(code), 0) + 1
        if a.interval:
            time.sleep(a.interval)
    out = summary(lat)
    out["errors"] = errs
    json.dump(out, sys.stdout)


def denied(a):
    """Wrong user and wrong password, alternating, each from a fresh loopback
    source (127.1.x.y) so the throttle never delays one: the two answers must
    take the same time (both hash against the real hash)."""
    lat = {"user": [], "password": []}
    errs = {}
    for i in range(2 * a.count):
        kind = "user" if i % 2 == 0 else "password"
        src = "127.1.%d.%d" % (1 + i // 250, 2 + i % 250)
        body = {"username": "nobody" if kind == "user" else "admin",
                "password": a.password if kind == "user" else a.password + "-wrong"}
        t0 = time.monotonic()
        c = Conn(a.port, src)
        try:
            code, _, _ = c.request("POST", "/api/v1/session", body, close=True)
        except Exception as e:
            code = type(e).__name__
        finally:
            c.close()
        dt = (time.monotonic() - t0) * 1000
        if code == 401:
            lat[kind].append(round(dt, 2))
        else:
            errs[str(code)] = errs.get(str(code), 0) + 1
    u, p = summary(lat["user"]), summary(lat["password"])
    json.dump({"wrong_user": u, "wrong_password": p, "errors": errs,
               "ratio_p50": round(u["p50_ms"] / p["p50_ms"], 3) if u["p50_ms"] and p["p50_ms"] else None},
              sys.stdout)


def argon2(a):
    lat = []
    for i in range(a.count):
        t0 = time.monotonic()
        p = subprocess.run(["argon2", "keelbenchsalt16b", "-id", "-t", str(a.t), "-k", str(a.m), "-p", "1", "-r"],
                           input=b"correct-horse-battery", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = (time.monotonic() - t0) * 1000
        if p.returncode != 0:
            raise SystemExit("argon2 failed: " + p.stderr.decode(errors="replace"))
        lat.append(round(dt, 2))
    json.dump(summary(lat), sys.stdout)


def theory(a):
    def run(seconds):
        nxt = [0.0] * a.sources          # when each source may guess next
        fails = [0] * a.sources
        window = []                      # times of evaluations that consumed the global budget
        total = 0
        while True:
            i = min(range(a.sources), key=lambda k: (nxt[k], fails[k] > 0))
            t = nxt[i]
            consumes = fails[i] > 0
            if consumes:
                window = [w for w in window if w > t - 60.0]
                if len(window) >= a.glob:
                    t = max(t, window[0] + 60.0)
                    window = [w for w in window if w > t - 60.0]
            if t >= seconds:
                return total
            total += 1
            if consumes:
                window.append(t)
            fails[i] += 1
            if fails[i] < a.free:
                nxt[i] = t
            else:
                nxt[i] = t + min(a.max, a.base * 2 ** (fails[i] - a.free))
    json.dump({"seconds": a.seconds, "sources": a.sources, "max_guesses": run(a.seconds),
               "max_guesses_hour": run(3600.0)}, sys.stdout)


def ctxt(a):
    def switches():
        n = 0
        for tid in os.listdir("/proc/%d/task" % a.pid):
            try:
                with open("/proc/%d/task/%s/status" % (a.pid, tid)) as f:
                    for l in f:
                        if l.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            n += int(l.split()[1])
            except OSError:
                pass
        return n

    def status(key):
        with open("/proc/%d/status" % a.pid) as f:
            for l in f:
                if l.startswith(key + ":"):
                    return int(l.split()[1])

    s0, t0 = switches(), time.monotonic()
    time.sleep(a.seconds)
    s1, t1 = switches(), time.monotonic()
    json.dump({"switches": s1 - s0, "seconds": round(t1 - t0, 3), "per_second": round((s1 - s0) / (t1 - t0), 3),
               "rss_kib": status("VmRSS"), "hwm_kib": status("VmHWM"), "threads": status("Threads")}, sys.stdout)


def rtt(a):
    """Keep-alive GET /api/v1/status round trips on keeld, and on a bare TLS
    server in this process answering the same bytes in one write (the floor)."""
    import subprocess, tempfile, threading

    def measure(port):
        c = Conn(port, "127.0.0.1")
        lat = []
        try:
            c.request("GET", "/api/v1/status")  # handshake outside the timing
            for _ in range(a.count):
                t0 = time.monotonic()
                code, _, _ = c.request("GET", "/api/v1/status")
                if code == 200:
                    lat.append(round((time.monotonic() - t0) * 1000, 3))
        finally:
            c.close()
        return lat

    keeld = measure(a.port)
    c = Conn(a.port, "127.0.0.1")
    c.open()
    c.s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    answer = b""
    while True:
        b = c.s.recv(65536)
        if not b:
            break
        answer += b
    c.close()
    answer = answer.replace(b"Connection: close\r\n", b"")
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", d + "/k.pem", "-out", d + "/c.pem", "-days", "1", "-subj", "/CN=floor"],
                       check=True, capture_output=True)
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(d + "/c.pem", d + "/k.pem")
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)

        def serve():
            raw, _ = ls.accept()
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s = sctx.wrap_socket(raw, server_side=True)
            buf = b""
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        b = s.recv(65536)
                        if not b:
                            return
                        buf += b
                    buf = buf.partition(b"\r\n\r\n")[2]
                    s.sendall(answer)
            except OSError:
                return

        th = threading.Thread(target=serve, daemon=True)
        th.start()
        floor = measure(ls.getsockname()[1])
        ls.close()
    k, f = summary(keeld), summary(floor)
    def strip(d):
        return {x: v for x, v in d.items() if x != "all_ms"}
    json.dump({"keeld": strip(k), "floor": strip(f),
               "ratio_p50": round(k["p50_ms"] / f["p50_ms"], 2) if k["p50_ms"] and f["p50_ms"] else None},
              sys.stdout)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("attack")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sources", required=True)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60)
    p = sub.add_parser("owner")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--count", type=int, default=30)
    p.add_argument("--interval", type=float, default=0)
    p.add_argument("--max-seconds", type=float, default=600)
    p = sub.add_parser("denied")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--count", type=int, default=30)
    p = sub.add_parser("argon2")
    p.add_argument("--count", type=int, default=30)
    p.add_argument("--t", type=int, default=2)
    p.add_argument("--m", type=int, default=19456)
    p = sub.add_parser("theory")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--sources", type=int, required=True)
    p.add_argument("--free", type=int, default=3)
    p.add_argument("--base", type=float, default=1)
    p.add_argument("--max", type=float, default=300)
    p.add_argument("--global", dest="glob", type=int, default=20)
    p = sub.add_parser("rtt")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=200)
    p = sub.add_parser("ctxt")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    cmds = {"attack": attack, "owner": owner, "denied": denied, "argon2": argon2, "theory": theory, "ctxt": ctxt,
            "rtt": rtt}
    cmds[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
