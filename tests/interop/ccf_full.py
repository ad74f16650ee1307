"""CCF's own ledger verification, as `python -m ccf.read_ledger` runs it at FULL level.

`ccf.ledger.Ledger` alone only parses chunks (and at FULL checks the positions tables); the
signatures, roots and node trust are checked by `ccf.ledger.LedgerValidator`, fed every
transaction in order. This module does both, like `ccf.read_ledger.run`, without printing.
"""

import ccf.ledger


def verify(paths, uncommitted=False):
    """Returns (ok, error, transactions, signatures, last verified txid)."""
    level = ccf.ledger.VerificationLevel.FULL
    validator = ccf.ledger.LedgerValidator(verification_level=level)
    try:
        ledger = ccf.ledger.Ledger(
            list(paths), committed_only=not uncommitted, verification_level=level
        )
        for chunk in ledger:
            for transaction in chunk:
                validator.add_transaction(transaction)
    except Exception as e:  # what read_ledger.run reports as "Error parsing ledger"
        return (
            False,
            f"{type(e).__name__}: {e}",
            validator.transaction_count,
            validator.signature_count,
            str(validator.last_verified_txid()),
        )
    return (
        True,
        None,
        validator.transaction_count,
        validator.signature_count,
        str(validator.last_verified_txid()),
    )
