"""Checks a ledger directory and receipts written by Vellum with Microsoft's own tools.

* ``ccf`` (7.0.22): ``ccf.ledger.LedgerValidator`` at ``VerificationLevel.FULL`` over every
  transaction (every signature, root and node, as ``ccf.read_ledger`` does), and
  ``ccf.receipt`` (leaf/root fold, prehashed ECDSA signature, endorsements, the
  ``cryptography`` chain policy, and ``verify_cose`` for COSE receipts);
* ``azure-confidentialledger`` (1.1.1): ``verify_receipt`` with the application claims.

Usage: python verify_with_official_tools.py OUT_DIR   (OUT_DIR as written by
``vellum sample-ledger``: ledger/, receipts/, service_cert.pem). Exits non-zero on any failure
and prints one line per check.
"""

import hashlib
import json
import pathlib
import sys

from cryptography import x509

import ccf.receipt
from azure.confidentialledger.receipt import verify_receipt

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import ccf_full  # noqa: E402


def main(out: pathlib.Path) -> int:
    passed = failed = 0

    def check(name, fn):
        nonlocal passed, failed
        try:
            fn()
            passed += 1
        except Exception as e:  # report every failure, keep going
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")

    service_pem = (out / "service_cert.pem").read_text()
    service_cert = x509.load_pem_x509_certificate(service_pem.encode())

    def ledger_full():
        ok, error, count, sigs, last = ccf_full.verify([str(out / "ledger")])
        assert ok, error
        assert count > 0 and sigs > 0, "no transactions"
        print(f"ok   ccf.ledger FULL: {count} transactions, {sigs} signatures, until {last}")

    check("ccf.ledger FULL", ledger_full)

    for path in sorted((out / "receipts").glob("*.json")):
        response = json.loads(path.read_text())
        receipt = response["receipt"]
        claims = response.get("applicationClaims")

        def azure_sdk():
            verify_receipt(receipt, service_pem, application_claims=claims)

        def ccf_json():
            lc = receipt["leafComponents"]
            leaf = hashlib.sha256(
                bytes.fromhex(lc["writeSetDigest"])
                + hashlib.sha256(lc["commitEvidence"].encode()).digest()
                + bytes.fromhex(lc["claimsDigest"])
            ).hexdigest()
            root = ccf.receipt.root(leaf, receipt["proof"])
            node_cert = x509.load_pem_x509_certificate(receipt["cert"].encode())
            ccf.receipt.verify(root, receipt["signature"], node_cert)
            ccf.receipt.check_endorsements(node_cert, service_cert, [])
            ccf.receipt.check_cert_chain(node_cert, service_cert, [])

        def ccf_cose():
            cose = path.with_suffix(".cose").read_bytes()
            digest = bytes.fromhex(receipt["leafComponents"]["claimsDigest"])
            ccf.receipt.verify_cose(cose, service_cert.public_key(), digest)

        check(f"azure verify_receipt {path.name}", azure_sdk)
        check(f"ccf.receipt {path.name}", ccf_json)
        check(f"ccf.receipt.verify_cose {path.stem}.cose", ccf_cose)

        # A tampered receipt must be rejected by the Azure SDK.
        bad = json.loads(json.dumps(receipt))
        wsd = bad["leafComponents"]["writeSetDigest"]
        bad["leafComponents"]["writeSetDigest"] = ("1" if wsd[0] == "0" else "0") + wsd[1:]

        def tampered():
            try:
                verify_receipt(bad, service_pem, application_claims=claims)
            except Exception:
                return
            raise AssertionError("tampered receipt accepted")

        check(f"tampered {path.name} rejected", tampered)

    print(f"interop: {passed} passed, {failed} failed")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1])))
