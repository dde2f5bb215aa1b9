"""``python -m shared.healthcheck URL``: exit 0 if URL answers 200.

The containers' healthcheck: the images have Python but no curl.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m shared.healthcheck URL", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=3) as response:  # noqa: S310
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
