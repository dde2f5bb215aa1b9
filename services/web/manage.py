#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The project (web) is in services/; the package it uses is installed..
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings.production")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
