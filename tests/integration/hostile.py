#!/usr/bin/env python3
"""Hostile clients against keeld's HTTPS port, and a legitimate client
measured while they run (tests/integration/keeld_hostile.sh).

    hostile.py run --port P --pid PID --token TOKEN [--seconds 18] [--slow 500]
                   [--rss-max-kib 32768] [--p99-ms 100]

`run` starts the attack in a second process (`hostile.py attack ...`, so the
attackers' Python does not share a GIL with the measurements), then, from
this process, sends GET /api/v1/status and an authenticated GET
/api/v1/device on a fresh TLS connection each, one after the other, and
samples keeld's VmRSS every 100 ms. It prints the figures and exits 1 with
a FAIL line for every broken promise: keeld gone, a legitimate request that
failed, p99 over the bound, RSS over the bound, a hostile request answered
with success or 5xx.

The attack (asyncio, stdlib only), for --seconds:
  slowloris  4/5 of --slow: TLS handshake, then one header byte a second
  no-hello   1/5 of --slow: TCP only; half send nothing, half a ClientHello
             one byte a second
  bigheader  request headers over 8 KiB (one long line, or many lines)
  badjson    POST /api/v1/session with malformed JSON bodies
  random     random bytes on the TLS port, before or after a handshake
A connection the server closes is opened again after a second (a slowloris
attacker keeps its connections coming back). Attack connections come from
127.0.0.10-29; the legitimate client from 127.0.0.1. Loopback only.
"""
import argparse
import asyncio
import json
import os
import random
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"
ATTACK_SOURCES = ["127.0.0.%d" % i for i in range(10, 30)]


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---------------------------------------------------------------- the attack

class Attack:
    def __init__(self, port, seconds, slow):
        self.port = port
        self.deadline = time.monotonic() + seconds
        self.slow = slow
        self.ctx = client_ctx()
        self.stats = {}
        self.open_now = 0
        self.open_max = 0

    def count(self, key, n=1):
        self.stats[key] = self.stats.get(key, 0) + n

    def live(self):
        return time.monotonic() < self.deadline

    def src(self):
        return (random.choice(ATTACK_SOURCES), 0)

    async def connect(self, tls):
        r, w = await asyncio.wait_for(
            asyncio.open_connection(HOST, self.port, ssl=self.ctx if tls else None,
                                    local_addr=self.src(), server_hostname="" if tls else None),
            timeout=10)
        self.open_now += 1
        self.open_max = max(self.open_max, self.open_now)
        return r, w

    def close(self, w):
        self.open_now -= 1
        try:
            w.transport.abort()
        except Exception:
            pass

    async def trickle(self, r, w, data, kind):
        """Writes data one byte a second until the server closes or time is up."""
        rd = asyncio.ensure_future(r.read(65536))
        try:
            for i in range(len(data)):
                if not self.live():
                    self.count(kind + ".held_to_end")
                    return
                done, _ = await asyncio.wait({rd}, timeout=1.0)
                if done:
                    got = b""
                    try:
                        got = rd.result()
                    except Exception:
                        pass
                    self.count(kind + (".answered" if got else ".closed_by_server"))
                    if got.startswith(b"HTTP/1.1 2"):
                        self.count("violation." + kind + ".2xx")
                    return
                w.write(data[i:i + 1])
                await w.drain()
            self.count(kind + ".sent_all")
        finally:
            rd.cancel()

    async def slowloris(self):
        req = b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100000
        while self.live():
            w = None
            try:
                r, w = await self.connect(True)
                self.count("slowloris.handshakes")
                await self.trickle(r, w, req, "slowloris")
            except Exception as e:
                self.count("slowloris.error." + type(e).__name__)
            finally:
                if w is not None:
                    self.close(w)
            if self.live():
                await asyncio.sleep(1.0 + random.random() * 0.5)

    async def nohello(self, send_bytes):
        # A TLS record header announcing a long ClientHello, then the start of it.
        hello = b"\x16\x03\x01\x3f\xff\x01\x00\x3f\xfb\x03\x03" + os.urandom(64000)
        while self.live():
            w = None
            try:
                r, w = await self.connect(False)
                self.count("nohello.connects")
                if send_bytes:
                    await self.trickle(r, w, hello, "nohello")
                else:
                    try:
                        got = await asyncio.wait_for(r.read(1), timeout=max(0.1, self.deadline - time.monotonic()))
                        self.count("nohello.closed_by_server" if not got else "nohello.answered")
                    except asyncio.TimeoutError:
                        self.count("nohello.held_to_end")
            except Exception as e:
                self.count("nohello.error." + type(e).__name__)
            finally:
                if w is not None:
                    self.close(w)
            if self.live():
                await asyncio.sleep(1.0 + random.random() * 0.5)

    async def request(self, raw, kind, timeout=10):
        """One request on a fresh TLS connection; returns the status code, 0 for a close."""
        w = None
        try:
            r, w = await self.connect(True)
            w.write(raw)
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n"), timeout=timeout)
            parts = head.split()
            return int(parts[1]) if len(parts) >= 2 and parts[0].startswith(b"HTTP/") else -1
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, EOFError):
            return 0
        except asyncio.TimeoutError:
            self.count(kind + ".no_answer_in_%ds" % timeout)
            return -2
        finally:
            if w is not None:
                self.close(w)

    def judge(self, kind, code, allowed):
        self.count("%s.%s" % (kind, {0: "closed", -1: "garbage", -2: "timeout"}.get(code, code)))
        if code >= 200 and code < 300 or code >= 500 or (code > 0 and code not in allowed):
            self.count("violation.%s.%d" % (kind, code))

    async def bigheader(self):
        n = 0
        while self.live():
            n += 1
            if n % 2:
                hdrs = b"X-Big: " + b"a" * 9000 + b"\r\n"
            else:
                hdrs = b"".join(b"X-Big-%d: %s\r\n" % (i, b"b" * 1000) for i in range(12))
            raw = b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n" + hdrs + b"\r\n"
            try:
                self.judge("bigheader", await self.request(raw, "bigheader"), (431, 400, 413))
            except Exception as e:
                self.count("bigheader.error." + type(e).__name__)
            await asyncio.sleep(0.1)

    BAD_BODIES = [
        b'{"username":',
        b'{"username": "admin", "password": "x", "password": "y"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"username": "admin", "password": "\xff\xfe\xfd"}',
        b'{"username": "admin", "password": 1e999999}',
        b'{"username": "admin", "password": "x"} trailing',
        b'{"username": "admin\x00", "password": "x"',
        b"\x00\x01\x02\x03",
        b'{"a":' * 3000,
        b'{"username": "admin", "password": "x", "nested": {"a": [1, 2, {"b": null}]}}',
    ]

    async def badjson(self):
        while self.live():
            body = random.choice(self.BAD_BODIES)
            raw = (b"POST /api/v1/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
            try:
                self.judge("badjson", await self.request(raw, "badjson"), (400, 413, 429))
            except Exception as e:
                self.count("badjson.error." + type(e).__name__)
            await asyncio.sleep(0.05)

    async def randombytes(self):
        while self.live():
            w = None
            tls = random.random() < 0.5
            try:
                r, w = await self.connect(tls)
                w.write(os.urandom(random.randint(1, 8192)))
                await w.drain()
                got = await asyncio.wait_for(r.read(65536), timeout=10)
                kind = "random.tls" if tls else "random.tcp"
                if got.startswith(b"HTTP/1.1 2"):
                    self.count("violation." + kind + ".2xx")
                self.count(kind + (".answered" if got else ".closed"))
            except asyncio.TimeoutError:
                self.count("random.no_answer_in_10s")
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
                self.count("random.reset")
            except Exception as e:
                self.count("random.error." + type(e).__name__)
            finally:
                if w is not None:
                    self.close(w)
            await asyncio.sleep(0.1)

    async def main(self):
        tasks = []
        nslow = self.slow * 4 // 5
        for i in range(nslow):
            tasks.append(self.slowloris())
        for i in range(self.slow - nslow):
            tasks.append(self.nohello(i % 2 == 0))
        for i in range(5):
            tasks += [self.bigheader(), self.badjson(), self.randombytes()]
        # start them over the first second, as a real botnet would not be synchronous
        async def staggered(c):
            await asyncio.sleep(random.random())
            await c
        await asyncio.gather(*(staggered(c) for c in tasks), return_exceptions=True)
        self.stats["open_max"] = self.open_max


def attack_main(args):
    a = Attack(args.port, args.seconds, args.slow)
    asyncio.run(a.main())
    json.dump(a.stats, sys.stdout, sort_keys=True)


# ---------------------------------------------------------- the measurement

def one_request(port, path, token, timeout=5.0):
    """A fresh TLS connection, one request; returns (status, body, seconds)."""
    t0 = time.monotonic()
    raw = socket.create_connection((HOST, port), timeout=timeout, source_address=("127.0.0.1", 0))
    try:
        s = client_ctx().wrap_socket(raw, server_hostname=None)
        req = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % path
        if token:
            req += "Authorization: Bearer %s\r\n" % token
        s.sendall((req + "\r\n").encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                cl = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if cl and len(body) >= int(cl[0].split(b":")[1]):
                    break
        dt = time.monotonic() - t0
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1]) if head.startswith(b"HTTP/") else 0
        return status, body, dt
    finally:
        raw.close()


def run_main(args):
    fails = []
    cmd = [sys.executable, os.path.abspath(__file__), "attack", "--port", str(args.port),
           "--seconds", str(args.seconds), "--slow", str(args.slow)]
    atk = subprocess.Popen(cmd, stdout=subprocess.PIPE)

    rss = []
    gone = []
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            try:
                with open("/proc/%d/status" % args.pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            rss.append(int(line.split()[1]))
                        if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                            gone.append(time.monotonic())
            except OSError:
                gone.append(time.monotonic())
                return
            stop.wait(0.1)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()

    lat = {"status": [], "device": []}
    errors = []
    time.sleep(2.0)  # let the attack build up first
    end = time.monotonic() + args.seconds - 3.0
    n = 0
    while time.monotonic() < end and not gone:
        for name, path, tok in (("status", "/api/v1/status", None), ("device", "/api/v1/device", args.token)):
            n += 1
            try:
                st, body, dt = one_request(args.port, path, tok)
                ok = st == 200 and (b'"model"' in body)
                if ok:
                    lat[name].append(dt)
                else:
                    errors.append("%s: HTTP %s %r" % (path, st, body[:80]))
            except Exception as e:
                errors.append("%s: %s: %s" % (path, type(e).__name__, e))
        time.sleep(0.02)

    out, _ = atk.communicate(timeout=args.seconds + 60)
    stop.set()
    th.join()
    try:
        stats = json.loads(out.decode() or "{}")
    except ValueError:
        stats = {"unreadable": out[:200].decode(errors="replace")}

    all_lat = sorted(lat["status"] + lat["device"])

    def pct(xs, p):
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, int(round(p / 100.0 * len(xs) + 0.5)) - 1)] * 1000

    print("hostile: attack for %d s with %d slow connections (open at once, client side: up to %d)"
          % (args.seconds, args.slow, stats.get("open_max", -1)))
    for k in sorted(stats):
        print("hostile:   %-40s %s" % (k, stats[k]))
    print("hostile: legitimate requests: %d ok of %d (status %d, device %d)"
          % (len(all_lat), n, len(lat["status"]), len(lat["device"])))
    for name in ("status", "device"):
        xs = sorted(lat[name])
        if xs:
            print("hostile:   %-7s p50 %6.1f ms  p99 %6.1f ms  max %6.1f ms"
                  % (name, pct(xs, 50), pct(xs, 99), xs[-1] * 1000))
    p50, p99 = pct(all_lat, 50), pct(all_lat, 99)
    print("hostile: latency all: p50 %.1f ms, p99 %.1f ms (bound %d ms)" % (p50, p99, args.p99_ms))
    print("hostile: keeld VmRSS: max %d KiB, last %d KiB, %d samples (bound %d KiB)"
          % (max(rss) if rss else -1, rss[-1] if rss else -1, len(rss), args.rss_max_kib))

    if gone:
        fails.append("keeld exited during the attack")
    if errors:
        fails.append("%d legitimate request(s) failed, first: %s" % (len(errors), "; ".join(errors[:5])))
    if len(all_lat) < 20:
        fails.append("only %d legitimate requests completed" % len(all_lat))
    elif not p99 < args.p99_ms:
        fails.append("p99 latency %.1f ms over %d ms" % (p99, args.p99_ms))
    if not rss:
        fails.append("no RSS sample")
    elif max(rss) > args.rss_max_kib:
        fails.append("keeld RSS reached %d KiB, over %d KiB" % (max(rss), args.rss_max_kib))
    viol = {k: v for k, v in stats.items() if k.startswith("violation.")}
    if viol:
        fails.append("hostile requests answered with success or 5xx: %s" % viol)
    if atk.returncode != 0:
        fails.append("the attack process failed (exit %d)" % atk.returncode)
    for f in fails:
        print("FAIL: " + f, file=sys.stderr)
    return 1 if fails else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("run", "attack"))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--token")
    ap.add_argument("--seconds", type=int, default=18)
    ap.add_argument("--slow", type=int, default=500)
    ap.add_argument("--rss-max-kib", type=int, default=32768)
    ap.add_argument("--p99-ms", type=float, default=100.0)
    args = ap.parse_args()
    if args.mode == "attack":
        # On a real network the attackers run on their own machines. Here they
        # share keeld's CPUs; at the lowest priority they take what is left,
        # so the latency measured is keeld's, not the scheduler's.
        os.nice(19)
        attack_main(args)
        return 0
    if not args.pid or not args.token:
        ap.error("run needs --pid and --token")
    return run_main(args)


if __name__ == "__main__":
    sys.exit(main())
