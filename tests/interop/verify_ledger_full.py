"""Runs CCF's FULL ledger verification (every signature, root and node) over a ledger directory.

Usage: python verify_ledger_full.py LEDGER_DIR [--include-uncommitted]
Exits 0 and prints the counts when the ledger verifies; exits 1 with CCF's error otherwise.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ccf_full  # noqa: E402

ok, error, count, sigs, last = ccf_full.verify(
    [sys.argv[1]], uncommitted="--include-uncommitted" in sys.argv
)
if not ok:
    print(f"ccf.ledger FULL: failed after {count} transactions: {error}")
    sys.exit(1)
print(
    f"ccf.ledger FULL: {count} transactions verified, {sigs} signatures, until {last}"
)
sys.exit(0 if count > 0 else 1)
