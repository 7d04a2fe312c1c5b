"""``regtune`` with an epoch gate (``tests/_gate.py``): ``python tests/_gated.py worker`` and so on.

The gate comes from ``REGTUNE_TEST_GATE`` ("<folder>:<trial>:<epoch>"); the arguments go to ``regtune``.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from _gate import ENV, EpochGate

if __name__ == "__main__":
    here = Path(__file__).resolve().parent  # tests/: its tuner/ folder would shadow the tuner package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    EpochGate.from_env(os.environ[ENV]).install_here()
    raise SystemExit(importlib.import_module("api.cli").main(sys.argv[1:]))
