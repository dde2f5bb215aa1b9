"""``python -m bench``: see :mod:`bench.driver`."""

from __future__ import annotations

from .driver import main

if __name__ == "__main__":  # not when multiprocessing's spawn imports it
    main()
