"""Verifies the receipts of CCF's built-in /app/receipt with CCF's own Python package.

Usage: verify_ccf_receipts.py SERVICE_CERT RECEIPT_JSON RECEIPT_COSE [--tampered TAMPERED_COSE]

- RECEIPT_JSON (CCF's snake_case form): the leaf from its components, the root with
  ccf.receipt.root, the node's signature with ccf.receipt.verify, the node certificate's
  endorsement by the service certificate with ccf.receipt.check_endorsement.
- RECEIPT_COSE: ccf.receipt.verify_cose with the service key and the JSON receipt's claims
  digest (the same transaction).
- TAMPERED_COSE, if given, must fail ccf.receipt.verify_cose.

Prints "ALL PASSED" when every check passes.
"""

import json
import sys
from hashlib import sha256

from cryptography.x509 import load_pem_x509_certificate

import ccf.receipt


def main():
    service_cert = load_pem_x509_certificate(open(sys.argv[1], "rb").read())
    receipt = json.load(open(sys.argv[2]))
    cose = open(sys.argv[3], "rb").read()

    lc = receipt["leaf_components"]
    leaf = sha256(
        bytes.fromhex(lc["write_set_digest"])
        + sha256(lc["commit_evidence"].encode()).digest()
        + bytes.fromhex(lc["claims_digest"])
    ).hexdigest()
    root = ccf.receipt.root(leaf, receipt["proof"])
    node_cert = load_pem_x509_certificate(receipt["cert"].encode())
    ccf.receipt.verify(root, receipt["signature"], node_cert)
    ccf.receipt.check_endorsement(node_cert, service_cert)
    print("PASS json receipt: root, node signature, endorsement")

    ccf.receipt.verify_cose(
        cose, service_cert.public_key(), bytes.fromhex(lc["claims_digest"])
    )
    print("PASS cose receipt: ccf.receipt.verify_cose")

    if len(sys.argv) > 5 and sys.argv[4] == "--tampered":
        tampered = open(sys.argv[5], "rb").read()
        try:
            ccf.receipt.verify_cose(
                tampered, service_cert.public_key(), bytes.fromhex(lc["claims_digest"])
            )
        except Exception as e:  # noqa: BLE001 - any failure is the expected outcome
            print(f"PASS tampered cose receipt refused: {type(e).__name__}")
        else:
            print("FAIL tampered cose receipt verified")
            sys.exit(1)
    print("ALL PASSED")


if __name__ == "__main__":
    main()
