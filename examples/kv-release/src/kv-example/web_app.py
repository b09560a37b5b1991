"""The web job's app: `GET /` asks the kv server for `greeting` and says it.

It reaches the kv server by the link's address, a BOSH DNS name, resolved
on every request by the VM's resolver: the answer shows that the link, the
name and the director's DNS all work.
"""

import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    kv = config["kv"]
    url = f"http://{kv['address']}:{kv['port']}/greeting"
    where = f"kv at {kv['address']}:{kv['port']}, {len(kv['instances'])} kv instance(s)"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self.answer(200, "ok\n")
                return
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    greeting = r.read().decode().strip()
            except Exception as e:  # noqa: BLE001 - any failure is the answer
                self.answer(502, f"{config['instance']} cannot reach {url}: {e}\n")
                return
            self.answer(200, f"{config['instance']} says {greeting} ({where})\n")

        def answer(self, code: int, text: str) -> None:
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args: object) -> None:
            sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
            sys.stdout.flush()

    server = ThreadingHTTPServer((config["bind"], int(config["port"])), Handler)
    print(f"web listening on {config['bind']}:{config['port']}, {where}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
