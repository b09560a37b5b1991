"""The smoke-tests errand: checks kv and every web instance, one line each.

Exits 0 when every check passes, else 1. The kv check goes through the kv
link's BOSH DNS address; each web instance must answer with the greeting
kv holds.
"""

import json
import sys
import urllib.request


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode().strip()


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    failed = 0

    def check(name: str, ok: bool, detail: str) -> None:
        nonlocal failed
        failed += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)

    kv = config["kv"]
    greeting = None
    url = f"http://{kv['address']}:{kv['port']}/greeting"
    try:
        greeting = get(url)
        check("kv greeting", bool(greeting), f"{url} -> {greeting}")
    except Exception as e:  # noqa: BLE001 - any failure fails the check
        check("kv greeting", False, f"{url}: {e}")

    for web in config["web"]:
        url = f"http://{web['address']}:{config['web_port']}/"
        name = f"web/{web['index']}"
        try:
            said = get(url)
            ok = greeting is not None and f"says {greeting} " in said
            check(name, ok, f"{url} -> {said}")
        except Exception as e:  # noqa: BLE001
            check(name, False, f"{url}: {e}")
    if not config["web"]:
        check("web instances", False, "the web link has no instances")

    print(f"{'all checks passed' if failed == 0 else f'{failed} check(s) failed'}", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
