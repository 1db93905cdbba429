"""An OTLP/HTTP logs receiver for the gateway's end-to-end test: HTTPS
(optionally requiring a client certificate), POST /v1/logs with the JSON
encoding, each body parsed strictly into the protobuf
ExportLogsServiceRequest of opentelemetry-proto (the OpenTelemetry
project's generated classes): a field or type the schema does not have is
an error. Every record it accepted is written to OUT as one JSON line
({"resource": ..., "scope": ..., "record": ...}, protobuf's MessageToDict);
a body it could not parse is written as {"error": ...} and answered 400.

usage: receiver.py CERT KEY OUT PORTFILE [--client-ca CA] [--fail-first N]
       [--reject] [--retry-after-zero] [--endless-first]
--fail-first N: answer the first N exports 503 (the exporter must retry);
--reject: answer every export 400 (the exporter must drop, not retry);
--retry-after-zero: answer every export 503 with Retry-After: 0 (the
  exporter must still back off);
--endless-first: answer the first export 200 with a body that never ends
  (the exporter must stop reading it).
"""
import argparse
import http.server
import json
import ssl
import threading

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)

p = argparse.ArgumentParser()
p.add_argument("cert")
p.add_argument("key")
p.add_argument("out")
p.add_argument("portfile")
p.add_argument("--client-ca")
p.add_argument("--fail-first", type=int, default=0)
p.add_argument("--reject", action="store_true")
p.add_argument("--retry-after-zero", action="store_true")
p.add_argument("--endless-first", action="store_true")
a = p.parse_args()

lock = threading.Lock()
state = {"fail": a.fail_first, "endless": a.endless_first}


def write(obj):
    with lock, open(a.out, "a") as f:
        f.write(json.dumps(obj) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"{}"):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/logs":
            return self.answer(404)
        if self.headers.get("content-type") != "application/json":
            write({"error": "content-type " + str(self.headers.get("content-type"))})
            return self.answer(415)
        with lock:
            fail = state["fail"] > 0
            if fail:
                state["fail"] -= 1
        if fail:
            write({"answered": 503})
            return self.answer(503)
        if a.retry_after_zero:
            write({"answered": 503})
            self.send_response(503)
            self.send_header("retry-after", "0")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        with lock:
            endless = state["endless"]
            state["endless"] = False
        if endless:
            write({"answered": "endless"})
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                self.close_connection = True
                return
        if a.reject:
            write({"answered": 400})
            return self.answer(400, b'{"code":3,"message":"rejected by the test"}')
        try:
            req = json_format.Parse(body, ExportLogsServiceRequest(), ignore_unknown_fields=False)
        except Exception as e:  # noqa: BLE001 - any parse failure is the finding
            write({"error": "%s: %s" % (type(e).__name__, e)})
            return self.answer(400)
        for rl in req.resource_logs:
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    write({
                        "resource": json_format.MessageToDict(rl.resource),
                        "scope": sl.scope.name,
                        "record": json_format.MessageToDict(lr),
                    })
        self.answer(200)


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(a.cert, a.key)
if a.client_ca:
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(a.client_ca)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
with open(a.portfile + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os  # noqa: E402

os.replace(a.portfile + ".tmp", a.portfile)
srv.serve_forever()
