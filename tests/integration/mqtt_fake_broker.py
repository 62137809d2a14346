#!/usr/bin/env python3
"""A scripted, misbehaving MQTT v5 broker over mutual TLS, for link_faults.sh.

It serves one connection at a time on 127.0.0.1 (a free port, written to
--port-file) and plays one behaviour per connection from --script (a comma
list; the last one repeats). Every event goes to --log as one JSON line.

Behaviours:
  tcp_close        accept, close (before TLS)
  hello_close      read the ClientHello, close (mid-handshake)
  tls_close        complete TLS, close before CONNACK
  connack_close    CONNACK, close
  suback_close     CONNACK, SUBACK, close
  half_close       CONNACK, SUBACK, half a PUBACK, close
  disconnect_N     CONNACK, DISCONNECT with reason code N
  pub_close_K      serve, acknowledge K PUBLISHes, close on the next one
  early_cmd        a command PUBLISH before CONNACK, then as cmds
  cmds             CONNACK, SUBACK, the commands of --commands, then serve
  serve            CONNACK, SUBACK, PUBACK (reason codes from --codes) until the client goes
A connection idle for --idle seconds (default 1; serve and cmds: 30) is closed.

--codes 'N:RC,RC;N:RC': the PUBACK reason codes for the N-th distinct seq
this broker sees (1-based), one per time it arrives (then 0).
--commands: a JSON list of [topic, payload text, retain] sent as QoS 1.
"""
import argparse
import json
import os
import socket
import ssl
import sys


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def mqtt_str(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_packet(conn):
    first = read_exact(conn, 1)[0]
    mult, length = 1, 0
    while True:
        b = read_exact(conn, 1)[0]
        length += (b & 127) * mult
        mult *= 128
        if not b & 128:
            break
    return first, read_exact(conn, length) if length else b""


def read_varint(b, i):
    mult, n = 1, 0
    while True:
        n += (b[i] & 127) * mult
        mult *= 128
        i += 1
        if not b[i - 1] & 128:
            return n, i


def connect_props(body):
    """Maximum Packet Size (39) from a CONNECT, or None."""
    i = 2 + int.from_bytes(body[0:2], "big") + 1 + 1 + 2  # name, level, flags, keepalive
    plen, i = read_varint(body, i)
    end = i + plen
    while i < end:
        pid = body[i]
        i += 1
        if pid == 39:
            return int.from_bytes(body[i:i + 4], "big")
        size = {17: 4, 23: 1, 25: 1, 33: 2, 34: 2}.get(pid)
        if size is None:
            return None  # a property this parser does not know: stop
        i += size
    return None


class Conn:
    def __init__(self, args, log, n, sock):
        self.args, self.log, self.n, self.sock = args, log, n, sock
        self.acked = 0
        self.next_mid = 1

    def ev(self, **kv):
        kv["conn"] = self.n
        self.log.write(json.dumps(kv) + "\n")
        self.log.flush()

    def send(self, b):
        self.sock.sendall(b)

    def expect_connect(self):
        first, body = read_packet(self.sock)
        if first >> 4 != 1:
            raise EOFError
        self.ev(event="connect", max_packet=connect_props(body))

    def connack(self):
        self.send(packet(0x20, b"\x00\x00\x00"))

    def expect_subscribe(self):
        first, body = read_packet(self.sock)
        if first >> 4 != 8:
            raise EOFError
        pid = body[0:2]
        plen, i = read_varint(body, 2)
        i += plen
        tlen = int.from_bytes(body[i:i + 2], "big")
        topic = body[i + 2:i + 2 + tlen].decode()
        opts = body[i + 2 + tlen]
        self.ev(event="subscribe", topic=topic, options=opts)
        self.send(packet(0x90, pid + b"\x00\x01"))

    def command(self, topic, payload, retain):
        mid = self.next_mid
        self.next_mid += 1
        body = mqtt_str(topic) + mid.to_bytes(2, "big") + b"\x00" + payload.encode()
        self.send(packet(0x32 | (1 if retain else 0), body))

    def serve(self, close_after=None):
        while True:
            first, body = read_packet(self.sock)
            kind = first >> 4
            if kind == 3:  # PUBLISH
                qos = (first >> 1) & 3
                tlen = int.from_bytes(body[0:2], "big")
                topic = body[2:2 + tlen].decode()
                i = 2 + tlen
                pid = body[i:i + 2] if qos else b""
                i += 2 if qos else 0
                plen, i = read_varint(body, i)
                payload = body[i + plen:]
                try:
                    seq = json.loads(payload).get("seq")
                except (ValueError, AttributeError):
                    seq = None
                if close_after is not None and self.acked >= close_after:
                    self.ev(event="publish_dropped", topic=topic, seq=seq)
                    return
                nth = self.args.seen.setdefault(seq, len(self.args.seen) + 1)
                codes = self.args.codes.get(nth, [])
                rc = codes.pop(0) if codes else 0
                self.ev(event="publish", topic=topic, seq=seq, nth=nth, rc=rc, retain=bool(first & 1))
                if qos:
                    self.send(packet(0x40, pid + bytes([rc]) + b"\x00"))
                self.acked += 1
            elif kind == 12:  # PINGREQ
                self.send(b"\xd0\x00")
            elif kind == 14:  # DISCONNECT
                self.ev(event="client_disconnect")
                return
            # PUBACKs for our commands and anything else: ignored

    def run(self, mode):
        if mode == "early_cmd":
            self.expect_connect()
            self.command(self.args.prefix + "early", "{}", False)
            self.connack()
            self.expect_subscribe()
            for topic, payload, retain in self.args.commands:
                self.command(topic, payload, retain)
            return self.serve()
        self.expect_connect()
        if mode == "tls_close":
            return
        self.connack()
        if mode == "connack_close":
            return
        if mode.startswith("disconnect_"):
            self.send(packet(0xE0, bytes([int(mode[11:])]) + b"\x00"))
            return
        self.expect_subscribe()
        if mode == "suback_close":
            return
        if mode == "half_close":
            self.send(b"\x40\x04")
            return
        if mode.startswith("pub_close_"):
            return self.serve(close_after=int(mode[10:]))
        if mode == "cmds":
            for topic, payload, retain in self.args.commands:
                self.command(topic, payload, retain)
        return self.serve()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--cert", required=True, help="the broker's chain (leaf first)")
    ap.add_argument("--key", required=True)
    ap.add_argument("--cafile", required=True, help="the device CAs")
    ap.add_argument("--script", default="serve")
    ap.add_argument("--codes", default="")
    ap.add_argument("--commands", default="[]")
    ap.add_argument("--prefix", default="", help="keel/v1/<id>/cmd/ (for early_cmd)")
    ap.add_argument("--idle", type=float, default=1.0)
    ap.add_argument("--tls-max", choices=["1.1", "1.2", "1.3"], default="1.3")
    ap.add_argument("--ciphers", default=None, help="TLS 1.2 cipher string (to offer only weak ones)")
    args = ap.parse_args()
    codes = {}
    for part in filter(None, args.codes.split(";")):
        seq, rcs = part.split(":")
        codes[int(seq)] = [int(x) for x in rcs.split(",")]
    args.codes = codes
    args.seen = {}
    args.commands = json.loads(args.commands)
    script = args.script.split(",")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = {"1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
    ctx.maximum_version = versions[args.tls_max]
    ctx.minimum_version = min(ssl.TLSVersion.TLSv1_2, versions[args.tls_max])
    if args.tls_max == "1.1" or args.ciphers:
        # an old or weak server: allow what the device must refuse
        ctx.set_ciphers((args.ciphers or "DEFAULT") + ":@SECLEVEL=0")
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(args.cafile)
    ctx.verify_mode = ssl.CERT_REQUIRED
    log = open(args.log, "a")
    sni = {}

    def on_sni(sslobj, name, _ctx):
        sni["name"] = name

    ctx.sni_callback = on_sni

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.getsockname()[1])
    os.rename(tmp, args.port_file)

    n = 0
    while True:
        raw, _ = srv.accept()
        mode = script[min(n, len(script) - 1)]
        c = Conn(args, log, n, None)
        c.ev(event="accept", mode=mode)
        raw.settimeout(30 if mode in ("serve", "cmds", "early_cmd") else args.idle)
        try:
            if mode == "tcp_close":
                pass
            elif mode == "hello_close":
                raw.recv(5)
            else:
                sni.clear()
                c.sock = ctx.wrap_socket(raw, server_side=True)
                c.ev(event="tls", sni=sni.get("name"), version=c.sock.version(), cipher=c.sock.cipher()[0])
                c.run(mode)
        except (EOFError, OSError, ssl.SSLError, socket.timeout) as e:
            c.ev(event="end", why=type(e).__name__)
        finally:
            try:
                (c.sock or raw).close()
            except OSError:
                pass
            c.ev(event="closed")
        n += 1


if __name__ == "__main__":
    sys.exit(main())
