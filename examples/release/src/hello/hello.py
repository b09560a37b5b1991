"""The hello job's HTTP server: GET / answers the greeting, GET /health 'ok'."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import greeting


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    body = greeting.render(config["greeting"], config.get("instance", "?")).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = b"ok\n" if self.path == "/health" else body
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args: object) -> None:
            sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
            sys.stdout.flush()

    server = ThreadingHTTPServer((config["bind"], int(config["port"])), Handler)
    print(f"listening on {config['bind']}:{config['port']}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
