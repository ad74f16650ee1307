"""CCF's verdict on many ledger directories: for each directory named on standard input (one
per line), one JSON line on standard output: {"dir", "ok", "error", "transactions"}.

Used by the differential test of `vellum audit` (crates/vellum-ledger/tests/audit_differential.rs):
it starts Python once and feeds it every mutant.
"""

import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ccf_full  # noqa: E402

warnings.simplefilter("ignore")
for line in sys.stdin:
    path = line.rstrip("\n")
    if not path:
        continue
    ok, error, count, _, _ = ccf_full.verify([path])
    print(json.dumps({"dir": path, "ok": ok, "error": error, "transactions": count}), flush=True)
