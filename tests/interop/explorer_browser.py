"""Drives the explorer (/explorer) in headless Chromium through WebDriver (Debian's
chromium-driver), against a real node with data: every page, links, a tag filter, a receipt
verified in the page, tampered receipts rejected in the offline page naming the failing step,
a Reader who sees no admin page, a phone-width layout, keyboard entry, and no request leaving
the node's origin. Saves screenshots to VELLUM_SCREENSHOTS.

Run by crates/vellum-node/tests/explorer_browser.rs, which starts the node and passes:
VELLUM_ENDPOINT, VELLUM_ADMIN_TOKEN, VELLUM_READER_TOKEN, VELLUM_READER_ID, VELLUM_FINGERPRINT,
VELLUM_TXID, VELLUM_COLLECTION, VELLUM_TAG, VELLUM_TAGGED (comma-separated ids tagged VELLUM_TAG),
VELLUM_RECEIPT (a receipt response, JSON file), VELLUM_SERVICE_CERT (PEM file),
VELLUM_SCREENSHOTS (a directory).
"""

import base64
import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

E = os.environ["VELLUM_ENDPOINT"]
SHOTS = os.environ["VELLUM_SCREENSHOTS"]
CHECKS = 0


def check(cond, what):
    global CHECKS
    if not cond:
        print(f"FAIL {what}")
        sys.exit(1)
    CHECKS += 1
    print(f"PASS {what}")


def browser():
    opts = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--ignore-certificate-errors", "--window-size=1280,900"]:
        opts.add_argument(a)
    opts.binary_location = os.environ.get("VELLUM_CHROMIUM", "/usr/bin/chromium")
    service = Service(os.environ.get("VELLUM_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=opts, service=service)


d = browser()
wait = WebDriverWait(d, 20)


def go(hash_):
    """Opens a page and waits until the explorer has drawn it (not the page before it)."""
    url = f"{E}/explorer{hash_}"
    old = d.find_elements(By.CSS_SELECTOR, "#main h2")
    if d.current_url == url:
        d.refresh()
    else:
        d.get(url)
    if old:
        wait.until(EC.staleness_of(old[0]))
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#main h2")))


def text_of(css):
    return wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, css))).text


def wait_text(css, needle):
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), needle))
    return d.find_element(By.CSS_SELECTOR, css).text


def shot(name):
    path = os.path.join(SHOTS, f"{name}.png")
    d.save_screenshot(path)
    print(f"screenshot {path}")


def sign_in(token):
    go("#/sign-in")
    box = wait.until(EC.presence_of_element_located((By.ID, "token-input")))
    box.clear()
    # Pasted, not typed: a token is long.
    d.execute_script("arguments[0].value = arguments[1];", box, token)
    d.find_element(By.ID, "sign-in-button").click()
    wait_text("#sign-in-status", "Signed in")


def same_origin_only():
    urls = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return all(u.startswith(E) or u.startswith("blob:") or u.startswith("data:") for u in urls), urls


try:
    # The service at a glance, before signing in (public parts).
    go("#/")
    fp = wait_text("#fingerprint", ":")
    check(fp == os.environ["VELLUM_FINGERPRINT"], f"the service page shows the certificate's fingerprint ({fp[:17]}...)")
    check("Nodes" in d.find_element(By.ID, "main").text, "the service page lists the nodes")
    # Keyboard: the first Tab reaches the skip link, which moves focus to the content.
    ActionChains(d).send_keys(Keys.TAB).perform()
    active = d.switch_to.active_element
    check(active.get_attribute("class") == "skip", "the first Tab reaches 'Skip to the content'")

    sign_in(os.environ["VELLUM_ADMIN_TOKEN"])
    wait.until(lambda _: d.find_element(By.ID, "nav-users").is_displayed())
    check(True, "an Administrator's token shows the Users page in the navigation")
    go("#/")
    wait_text("#main", "Constitution (SHA-256)")
    check(True, "signed in, the service page shows the members and the constitution's digest")
    shot("service")

    # Collections, then follow the link to a collection's entries.
    coll = os.environ["VELLUM_COLLECTION"]
    go("#/collections")
    link = wait.until(EC.element_to_be_clickable((By.LINK_TEXT, coll)))
    check(True, f"the collections page links to {coll}")
    tags = d.find_element(By.ID, "main").text
    check(os.environ["VELLUM_TAG"] in tags, "the collections page shows the collection's tags")
    shot("collections")
    before = d.find_element(By.CSS_SELECTOR, "#main h2")
    link.click()
    wait.until(EC.staleness_of(before))
    wait.until(EC.presence_of_element_located((By.ID, "entries")))
    rows = d.find_elements(By.CSS_SELECTOR, "#entries tbody tr")
    check(len(rows) > 0, f"following the link shows {coll}'s entries ({len(rows)} on the first page)")
    if d.find_elements(By.ID, "next-page"):
        first_page = [a.text for a in d.find_elements(By.CSS_SELECTOR, "#entries tbody tr td:first-child a")]
        before = d.find_element(By.CSS_SELECTOR, "#main h2")
        d.find_element(By.ID, "next-page").click()
        wait.until(EC.staleness_of(before))
        wait.until(EC.presence_of_element_located((By.ID, "entries")))
        second = [a.text for a in d.find_elements(By.CSS_SELECTOR, "#entries tbody tr td:first-child a")]
        check(second and not set(second) & set(first_page), f"the next page shows the next entries ({len(second)})")

    # Filter by tag.
    go(f"#/entries?collection={coll}")
    before = d.find_element(By.CSS_SELECTOR, "#main h2")
    d.find_element(By.NAME, "tag").send_keys(os.environ["VELLUM_TAG"] + Keys.ENTER)
    wait.until(EC.staleness_of(before))
    wait.until(EC.presence_of_element_located((By.ID, "entries")))
    ids = [a.text for a in d.find_elements(By.CSS_SELECTOR, "#entries tbody tr td:first-child a")]
    tagged = os.environ["VELLUM_TAGGED"].split(",")
    check(ids and all(i in tagged for i in ids), f"filtering by tag shows only tagged entries ({len(ids)})")
    shot("entries")

    # One transaction: its receipt verified in the page.
    txid = os.environ["VELLUM_TXID"]
    go(f"#/tx/{txid}?collection={coll}")
    verdict = wait_text("#verdict", "Receipt")
    check(verdict == "Receipt verified", f"the transaction page verifies {txid}'s receipt in the browser")
    steps = d.find_elements(By.CSS_SELECTOR, "#steps tbody tr")
    names = [s.get_attribute("data-step") for s in steps]
    check(names == ["leaf", "path", "signature", "node id", "endorsement"], f"every step is shown: {names}")
    check(all(s.find_elements(By.CSS_SELECTOR, "td.ok") for s in steps), "every step passes")
    check(d.find_element(By.ID, "contents").text != "", "the transaction page shows the contents")
    check(d.find_element(By.ID, "tags").text == os.environ["VELLUM_TAG"], "the transaction page shows its tag")
    shot("transaction")

    # Users (Administrator).
    go("#/users")
    users = wait_text("#users", os.environ["VELLUM_READER_ID"])
    check(os.environ["VELLUM_READER_ID"] in users, "the users page lists the Reader")

    # Functions and endpoints.
    go("#/code")
    fns = wait_text("#functions", "greet")
    check("greet" in fns, "the functions page lists the stored function")
    check("No endpoint is deployed" in wait_text("#main", "endpoint"), "the functions page says no endpoint is deployed")

    ok, urls = same_origin_only()
    check(ok, f"no request left the node's origin ({len(urls)} resources)")

    # Offline verification: the receipt passes, each tampering fails naming its step.
    receipt = json.load(open(os.environ["VELLUM_RECEIPT"]))
    cert = open(os.environ["VELLUM_SERVICE_CERT"]).read()

    def offline(r, c=cert):
        go("#/verify")
        box = wait.until(EC.presence_of_element_located((By.ID, "receipt-input")))
        d.execute_script("arguments[0].value = arguments[1];", box, json.dumps(r))
        d.execute_script("arguments[0].value = arguments[1];", d.find_element(By.ID, "cert-input"), c)
        d.find_element(By.ID, "verify-button").click()
        return wait_text("#verdict", "Receipt")

    check(offline(receipt) == "Receipt verified", "the offline page verifies the receipt")

    def tampered(path, fn):
        r = json.loads(json.dumps(receipt))
        obj = r["receipt"]
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = fn(obj[path[-1]])
        return r

    def flip_b64(s, at):
        b = bytearray(base64.b64decode(s))
        b[at] ^= 1
        return base64.b64encode(bytes(b)).decode()

    def flip_hex(s):
        return ("1" if s[0] == "0" else "0") + s[1:]

    def flip_cert(pem, at):
        body = "".join(l for l in pem.splitlines() if not l.startswith("-----"))
        der = bytearray(base64.b64decode(body))
        der[at] ^= 1
        b64 = base64.b64encode(bytes(der)).decode()
        return "-----BEGIN CERTIFICATE-----\n" + "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)) + "\n-----END CERTIFICATE-----\n"

    lc = "leafComponents"
    for what, r, step in [
        ("a flipped signature byte", tampered(["signature"], lambda s: flip_b64(s, 10)), "signature"),
        ("a flipped write-set digest", tampered([lc, "writeSetDigest"], flip_hex), "signature"),
        ("a malformed claims digest", tampered([lc, "claimsDigest"], lambda s: s[:-2]), "leaf"),
        ("a flipped proof step", tampered(["proof", 0], lambda e: {k: flip_hex(v) for k, v in e.items()}), "signature"),
        ("a flipped byte of the node certificate's signature", tampered(["cert"], lambda p: flip_cert(p, -5)), "endorsement"),
        ("a flipped node id", tampered(["nodeId"], flip_hex), "node id"),
    ]:
        v = offline(r)
        check(v.startswith(f"Receipt rejected at {step}:"), f"{what} is rejected at '{step}': {v[:90]}")
        if what == "a flipped signature byte":
            shot("verify-rejected")
    v = offline(receipt, flip_cert(cert, -5))
    check(v.startswith("Receipt rejected at endorsement:"), "another service certificate is rejected at 'endorsement'")

    # A Reader: no admin page.
    sign_in(os.environ["VELLUM_READER_TOKEN"])
    go("#/")
    wait_text("#fingerprint", ":")
    check(not d.find_element(By.ID, "nav-users").is_displayed(), "a Reader's navigation has no Users page")
    go("#/users")
    err = wait_text("#main", "Not allowed")
    check("403" in err, "a Reader who opens the Users page is refused by the API")
    go(f"#/tx/{txid}?collection={coll}")
    check(wait_text("#verdict", "Receipt") == "Receipt verified", "a Reader verifies a receipt too")

    # Sign-in through the OpenID Connect provider (the test's stand-in issues an
    # Administrator's token): the Users page comes back.
    if os.environ.get("VELLUM_OIDC") == "1":
        go("#/sign-in")
        wait.until(EC.element_to_be_clickable((By.ID, "oidc-button"))).click()
        status = wait_text("#sign-in-status", "identity provider")
        check(status == "Signed in through the identity provider.", f"the OpenID Connect sign-in completes: {status}")
        wait.until(lambda _: d.find_element(By.ID, "nav-users").is_displayed())
        check(True, "signed in through the provider as an Administrator, the Users page is offered")
        check("access_token" not in d.current_url, "the token does not stay in the address bar")

    # A phone's width.
    d.set_window_size(390, 844)
    go(f"#/tx/{txid}?collection={coll}")
    wait_text("#verdict", "Receipt")
    overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check(overflow <= 0, f"at a phone's width nothing overflows sideways ({overflow} px)")
    shot("transaction-phone")
    print(f"ALL PASSED: {CHECKS} checks")
finally:
    d.quit()
