#!/usr/bin/env python3
"""Start the RCD player (see player/cli.py)."""
from player.cli import main

raise SystemExit(main())
