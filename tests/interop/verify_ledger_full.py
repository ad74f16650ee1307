"""Runs ccf.ledger FULL verification over a ledger directory; prints the transaction count.

Usage: python verify_ledger_full.py LEDGER_DIR [--include-uncommitted]
"""

import sys

import ccf.ledger

ledger = ccf.ledger.Ledger(
    [sys.argv[1]],
    committed_only="--include-uncommitted" not in sys.argv,
    verification_level=ccf.ledger.VerificationLevel.FULL,
)
count = sum(1 for chunk in ledger for _ in chunk)
print(f"ccf.ledger FULL: {count} transactions verified")
sys.exit(0 if count > 0 else 1)
