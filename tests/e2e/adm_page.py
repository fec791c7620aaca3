"""Open an LB host's status page in headless Chromium (Debian's, through chromium-driver)
and print, as JSON, what a person sees: the host, each VRRP instance's role, each VIP's
owner; a screenshot goes to the folder given.

    python adm_page.py URL SCREENSHOT.png
"""

from __future__ import annotations

import json
import sys
import tempfile

from selenium.webdriver.common.by import By

from tests.browser.adm_browse import browser


def main() -> None:
    url, shot = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="aane2e-chromium-") as profile:
        driver = browser(profile, 1280, 1100)
        try:
            driver.get(url)
            roles = {
                row.find_element(By.TAG_NAME, "td").text: row.find_element(
                    By.CSS_SELECTOR, ".role"
                ).text
                for row in driver.find_elements(By.CSS_SELECTOR, "#vrrp tr")
                if row.find_elements(By.CSS_SELECTOR, ".role")
            }
            owners = {
                r.get_attribute("data-vip"): r.find_element(By.CSS_SELECTOR, ".owner").text
                for r in driver.find_elements(By.CSS_SELECTOR, "#vips tr[data-vip]")
            }
            driver.save_screenshot(shot)
            host = driver.find_element(By.ID, "host").text
        finally:
            driver.quit()
    print(json.dumps({"host": host, "roles": roles, "owners": owners}))


if __name__ == "__main__":
    main()
