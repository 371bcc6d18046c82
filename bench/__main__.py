"""``python -m bench`` runs every benchmark present; ``python -m bench NAME [ARGS]`` runs one.

Each benchmark is a module ``bench.NAME`` with ``main(argv) -> int``. Those not written yet are
skipped when running them all, and refused when asked for by name.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

BENCHES = ("server", "servers", "attack", "scaleout", "store", "ocr", "ocr_e2e", "client", "training")


def _load(name: str) -> ModuleType | None:
    module_name = f"bench.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise


def _entry(module: ModuleType) -> Callable[[Sequence[str]], int]:
    entry: Callable[[Sequence[str]], int] = module.main
    return entry


def usage() -> str:
    present = [name for name in BENCHES if _load(name) is not None]
    return (f"usage: python -m bench [NAME [ARGS...]]\n"
            f"  no NAME: run every benchmark present with its defaults\n"
            f"  NAME: one of {', '.join(BENCHES)} (present: {', '.join(present) or 'none'}); "
            f"'python -m bench NAME --help' for its options")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args:
        name, rest = args[0], args[1:]
        if name not in BENCHES:
            print(f"unknown benchmark {name!r}\n{usage()}", file=sys.stderr)
            return 2
        module = _load(name)
        if module is None:
            print(f"benchmark {name!r} is not written yet (no bench/{name}.py)", file=sys.stderr)
            return 2
        return int(_entry(module)(rest))
    status = 0
    for name in BENCHES:
        module = _load(name)
        if module is None:
            continue
        print(f"=== bench {name}", file=sys.stderr, flush=True)
        code = int(_entry(module)([]))
        if code:
            print(f"=== bench {name} exited with {code}", file=sys.stderr)
            status = status or code
    return status


if __name__ == "__main__":
    raise SystemExit(main())
