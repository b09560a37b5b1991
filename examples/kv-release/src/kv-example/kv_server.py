"""The kv job's server: `GET /<key>` answers the key's value from the seed.

The store is the `kv.seed` property, read once at start: enough for a
consumer to show that it found this server through its link.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    store = {str(k): v for k, v in (config.get("seed") or {}).items()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            key = self.path.lstrip("/")
            if key in store:
                value = store[key]
                text = value if isinstance(value, str) else json.dumps(value)
                self.answer(200, text + "\n")
            else:
                self.answer(404, f"no key {key!r}\n")

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
    print(f"kv listening on {config['bind']}:{config['port']} with {sorted(store)}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
