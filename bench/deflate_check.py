#!/usr/bin/python3
"""bench/deflate_check.py: loadgen's permessage-deflate against Python's zlib.

Runs bench/loadgen --deflate --mix against a small stand-in for the
presence ws worker written here (asyncio, no WebSocket library), once per
answer a server can give to Chromium's offer:

  context     "permessage-deflate" (what lws answers today): both sides
              keep their compression context from message to message
  fresh       "permessage-deflate; server_no_context_takeover;
              client_no_context_takeover": every message stands alone
  window10    "permessage-deflate; client_max_window_bits=10": the client
              must compress with a 1 KiB window (checked by inflating with
              one)
  none        no extension answered, then a frame with RSV1 set: loadgen
              must count the connections as failed
  novalue, unknown, twice
              answers RFC 7692 tells a client to refuse (client_max_window_bits
              without a value, an unknown parameter, a parameter twice):
              every connection must fail in the upgrade

The stand-in inflates every client frame with zlib exactly as the answer
allows (one decompressor per connection with context, a new one per
message without, and with the window it granted), requires RSV1 on every
client message and valid JSON in it, and sends its own messages
compressed the way it answered, some of them split over two frames.  It
speaks enough of the protocol for loadgen: welcome, session_join,
session_leave, cursor_update fan-out, heartbeat, activity.  loadgen's
RESULT must then show every connection held and every delivery made.

    /usr/bin/python3 bench/deflate_check.py [PORT]     (default 18990)

(LOADGEN=path runs another build of loadgen.)

Exit status 0 when every case passed.
"""
import asyncio
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import zlib

BENCH = os.path.dirname(os.path.abspath(__file__))
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TAIL = b"\x00\x00\xff\xff"

# name: (answer, the failure every connection must end with, or None)
CASES = {
    "context": ("permessage-deflate", None),
    "fresh": ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", None),
    "window10": ("permessage-deflate; client_max_window_bits=10", None),
    "none": (None, "RSV1 without permessage-deflate"),
    "novalue": ("permessage-deflate; client_max_window_bits", "bad window bits in answer"),
    "unknown": ("permessage-deflate; x_fast", "unknown parameter in answer"),
    "twice": ("permessage-deflate; server_no_context_takeover; server_no_context_takeover",
              "parameter answered twice"),
}


class Stats:
    def __init__(self):
        self.frames = 0
        self.inflated_bytes = 0
        self.wire_bytes = 0
        self.problems = []


class Client:
    """One connection to the stand-in server."""

    def __init__(self, server, reader, writer, answer):
        self.server, self.reader, self.writer = server, reader, writer
        self.answer = answer or ""
        self.deflate = answer is not None
        self.client_fresh = "client_no_context_takeover" in self.answer
        self.server_fresh = "server_no_context_takeover" in self.answer
        m = re.search(r"client_max_window_bits=(\d+)", self.answer)
        self.client_bits = int(m.group(1)) if m else 15
        self.inflater = zlib.decompressobj(-self.client_bits)
        self.deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.session = None
        self.user = None
        self.sent = 0

    def send(self, obj):
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.sent += 1
        if not self.deflate:
            self.frame(0x81, data)
            return
        if self.server_fresh:
            self.deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        z = self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        assert z.endswith(TAIL)
        z = z[:-4]
        if self.sent % 7 == 0 and len(z) > 2:  # split over two frames now and then
            self.frame(0x40 | 0x01, z[: len(z) // 2])
            self.frame(0x80, z[len(z) // 2:])
        else:
            self.frame(0x80 | 0x40 | 0x01, z)

    def frame(self, first, payload):
        n = len(payload)
        if n < 126:
            head = bytes([first, n])
        elif n < 65536:
            head = bytes([first, 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([first, 127]) + n.to_bytes(8, "big")
        self.writer.write(head + payload)

    async def read_frame(self):
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        mask = await self.reader.readexactly(4) if b1 & 0x80 else None
        data = bytearray(await self.reader.readexactly(n))
        if mask is None:
            self.server.stats.problems.append("unmasked client frame")
        else:
            for i in range(n):
                data[i] ^= mask[i & 3]
        return b0, bytes(data)

    def inflate(self, payload):
        if self.client_fresh:  # each message alone: a fresh decompressor must do
            self.inflater = zlib.decompressobj(-self.client_bits)
        return self.inflater.decompress(payload + TAIL)

    async def run(self):
        stats = self.server.stats
        while True:
            b0, payload = await self.read_frame()
            opcode, rsv1 = b0 & 0x0F, bool(b0 & 0x40)
            if opcode == 0x8:
                self.frame(0x88, payload[:2])
                await self.writer.drain()
                return
            if opcode == 0x9:
                self.frame(0x8A, payload)
                continue
            if opcode != 0x1 or not b0 & 0x80:
                stats.problems.append("unexpected client frame 0x%02x" % b0)
                continue
            if self.deflate and not rsv1:
                stats.problems.append("client message without RSV1")
                text = payload
            elif not self.deflate and rsv1:
                stats.problems.append("RSV1 without negotiation")
                continue
            elif rsv1:
                try:
                    text = self.inflate(payload)
                except zlib.error as e:
                    stats.problems.append("zlib: %s" % e)
                    continue
            else:
                text = payload
            stats.frames += 1
            stats.wire_bytes += len(payload)
            stats.inflated_bytes += len(text)
            try:
                msg = json.loads(text)
            except ValueError:
                stats.problems.append("not JSON: %r" % text[:60])
                continue
            self.server.handle(self, msg)
            await self.writer.drain()


class Server:
    """Enough of the presence protocol for loadgen."""

    def __init__(self, answer, rsv1_without_deflate=False):
        self.answer = answer
        self.rsv1_without_deflate = rsv1_without_deflate
        self.sessions = {}
        self.stats = Stats()
        self.activity_id = 0

    def members(self, session):
        return self.sessions.setdefault(session, [])

    def handle(self, client, msg):
        kind = msg.get("type")
        ref = msg.get("ref")
        sid = msg.get("sessionId")
        if kind == "session_join":
            client.session = sid
            members = self.members(sid)
            users = [{"userId": c.user, "status": "online", "role": "operator"} for c in members]
            for other in members:
                other.send({"type": "presence", "sessionId": sid,
                            "events": [{"kind": "join", "user": {"userId": client.user}}]})
            members.append(client)
            users.append({"userId": client.user, "status": "online", "role": "operator"})
            client.send({"type": "session_joined", "ref": ref, "sessionId": sid,
                         "role": "operator", "users": users})
        elif kind == "session_leave":
            self.members(sid).remove(client)
            for other in self.members(sid):
                other.send({"type": "presence", "sessionId": sid,
                            "events": [{"kind": "leave", "user": {"userId": client.user}}]})
            client.send({"type": "ack", "ref": ref})
        elif kind == "cursor_update":
            event = {"type": "presence", "sessionId": sid, "events": [
                {"kind": "cursor", "user": {"userId": client.user, "username": "bench",
                                            "role": "operator", "status": "online",
                                            "cursor": msg["cursor"]}}]}
            for other in self.members(sid):
                if other is not client:
                    other.send(event)
        elif kind == "heartbeat":
            client.send({"type": "heartbeat_ack", "serverTime": 0})
        elif kind == "activity":
            self.activity_id += 1
            event = {"type": "activity", "sessionId": sid, "activity": {
                "id": str(self.activity_id), "userId": client.user,
                "activityType": msg["activityType"], "details": msg.get("details", {})}}
            for other in self.members(sid):
                other.send(event)
            client.send({"type": "ack", "ref": ref, "activityId": str(self.activity_id)})
        else:
            self.stats.problems.append("unexpected message %r" % kind)

    async def serve(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return  # loadgen's probe that the port is open
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
        offer = headers.get("Sec-WebSocket-Extensions")
        if offer != "permessage-deflate; client_max_window_bits":
            self.stats.problems.append("offer %r, not Chromium's" % offer)
        accept = base64.b64encode(hashlib.sha1(headers["Sec-WebSocket-Key"].encode() + GUID).digest())
        reply = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: presence.v1\r\n" % accept.decode())
        if self.answer:
            reply += "Sec-WebSocket-Extensions: %s\r\n" % self.answer
        writer.write((reply + "\r\n").encode())
        client = Client(self, reader, writer, self.answer)
        token = headers["Authorization"].split(" ", 1)[1]
        client.user = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["sub"]
        if self.rsv1_without_deflate:
            client.frame(0xC1, b"\xab\x00")  # RSV1 set, nothing negotiated
        client.send({"type": "welcome", "protocol": 1, "userId": client.user,
                     "heartbeatInterval": 1000})
        try:
            await client.run()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if client.session and client in self.members(client.session):
                self.members(client.session).remove(client)
            writer.close()


def result_field(result, key):
    m = re.search(r"\b%s=(\S+)" % key, result)
    return m.group(1) if m else None


async def check(name, answer, failure, port):
    server = Server(answer, rsv1_without_deflate=answer is None)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", port)
    connections = 120
    args = [os.environ.get("LOADGEN", os.path.join(BENCH, "loadgen")), "--port", str(port), "--no-setup", "--deflate", "--mix",
            "--large-sessions", "2", "--connections", str(connections), "--sessions", "4",
            "--rate", "100", "--activity-rate", "20", "--rejoin-rate", "4",
            "--warmup", "0.5", "--duration", "3", "--drain", "1", "--idle-seconds", "0",
            "--progress", "100", "--connect-timeout", "3"]
    proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = (await proc.communicate())[0].decode()
    listener.close()
    result = next((line for line in out.splitlines() if line.startswith("RESULT")), "")
    problems = list(server.stats.problems)
    if failure:
        # every connection must fail, for that reason
        if result_field(result, "failed") != str(connections):
            problems.append("failed=%s, want %d" % (result_field(result, "failed"), connections))
        if failure not in out:
            problems.append("no '%s' failure in the report" % failure)
        summary = "failed=%s (%s)" % (result_field(result, "failed"), failure)
    else:
        for key, want in (("held", str(connections)), ("failed", "0"), ("dropped", "0"),
                          ("deflate_negotiated", str(connections))):
            if result_field(result, key) != want:
                problems.append("%s=%s, want %s" % (key, result_field(result, key), want))
        ratio = float(result_field(result, "delivery_ratio") or "nan")
        if not 0.98 <= ratio <= 1.02:
            problems.append("delivery_ratio=%s" % ratio)
        if "anomalies       none" not in out:
            problems.append("anomalies: " + next(l for l in out.splitlines() if l.startswith("anomalies")))
        if float(result_field(result, "activity_deliveries_per_s") or 0) <= 0:
            problems.append("no activity deliveries")
        if float(result_field(result, "rejoins_per_s") or 0) <= 0:
            problems.append("no rejoins")
        summary = ("%d client messages inflated by zlib (%d bytes on the wire, %d inflated); "
                   "loadgen: deliveries %s/s ratio %s, received wire %s B/s inflated %s B/s"
                   % (server.stats.frames, server.stats.wire_bytes, server.stats.inflated_bytes,
                      result_field(result, "deliveries_per_s"), result_field(result, "delivery_ratio"),
                      result_field(result, "recv_wire_bytes_per_s"), result_field(result, "recv_bytes_per_s")))
    print("%-9s %s: %s" % (name, "ok" if not problems else "FAILED", summary))
    for p in problems[:10]:
        print("          " + p)
    if problems:
        print(out)
    return not problems


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 18990
    ok = True
    for name, (answer, failure) in CASES.items():
        ok &= await check(name, answer, failure, port)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
