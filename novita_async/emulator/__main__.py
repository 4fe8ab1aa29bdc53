"""``python -m novita_async.emulator``: run the emulator until interrupted."""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
