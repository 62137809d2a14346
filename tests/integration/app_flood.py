#!/usr/bin/env python3
"""A product app that must not lose a message: publishes N telemetry objects
through keeld's app socket (docs/ipc.md), pipelined, each with its own id
("m<i>") so a resend after keeld died is recognised as the same message.

  app_flood.py SOCKET N DONE_FILE [RATE]

RATE (messages a second, default unpaced) spreads the flood over time, so
that a test's kills land while the app is still publishing.

Keeps going while keeld is killed and restarted: on a lost connection it
reconnects and resends everything not yet acknowledged. Writes DONE_FILE
(JSON: {"sent": N, "acked": N, "resent": R, "duplicates": D, "seqs": {i: seq}})
when every message has an "ok" reply, which keeld gives only once the
message is durable in the outbox.
"""
import json
import socket
import sys
import time

WINDOW = 256  # requests in flight


def connect(path, deadline):
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def line(i):
    t = {"n": i, "temperature": round(15 + (i % 100) / 10, 1), "heating": i % 2 == 0}
    return (json.dumps({"op": "publish", "telemetry": t, "id": "m%d" % i}) + "\n").encode()


def main():
    path, n, done_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0
    started = time.time()
    deadline = started + 600
    seqs = {}
    resent = duplicates = 0
    next_i = 0  # next message never sent
    while len(seqs) < n:
        s = connect(path, deadline)
        f = s.makefile("rb")
        pending = [i for i in range(n) if i < next_i and i not in seqs]  # sent, not acked
        resent += len(pending)
        inflight = []
        try:
            queue = pending + list(range(next_i, n))
            q = 0
            while q < len(queue) or inflight:
                burst = b""
                while q < len(queue) and len(inflight) < WINDOW:
                    if rate and queue[q] >= next_i and queue[q] > (time.time() - started) * rate:
                        break  # a new message, not yet due
                    i = queue[q]
                    q += 1
                    inflight.append(i)
                    burst += line(i)
                    next_i = max(next_i, i + 1)
                if burst:
                    s.sendall(burst)
                if not inflight:
                    time.sleep(0.005)
                    continue
                r = f.readline()
                if not r:
                    raise ConnectionError("keeld went away")
                rep = json.loads(r)
                i = inflight.pop(0)
                if not rep.get("ok"):
                    sys.exit("app_flood: message %d refused: %s" % (i, r.decode().strip()))
                if rep.get("duplicate"):
                    duplicates += 1
                seqs[i] = rep["seq"]
        except (ConnectionError, OSError):
            pass
        finally:
            f.close()
            s.close()
        if time.time() > deadline:
            sys.exit("app_flood: timed out with %d of %d acknowledged" % (len(seqs), n))
    with open(done_file + ".tmp", "w") as out:
        json.dump({"sent": n, "acked": len(seqs), "resent": resent, "duplicates": duplicates,
                   "seqs": seqs}, out)
    import os
    os.rename(done_file + ".tmp", done_file)


if __name__ == "__main__":
    main()
