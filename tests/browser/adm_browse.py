"""Open the status page in headless Chromium (Debian's, through chromium-driver) and report
what a person would see, as JSON on stdout. Runs inside the daemon's namespace:

    python adm_browse.py URL SCREENSHOT_DIR
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def browser(profile: str, width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def look(url: str, out: Path, name: str, width: int, height: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="adm-chromium-") as profile:
        driver = browser(profile, width, height)
        try:
            driver.get(url)
            rows = driver.find_elements(By.CSS_SELECTOR, "#vips tr[data-vip]")
            vips = {
                r.get_attribute("data-vip"): r.find_element(By.CSS_SELECTOR, ".owner").text
                for r in rows
            }
            down = [
                {
                    "service": e.find_element(
                        By.XPATH, "ancestor::div[@data-service]"
                    ).get_attribute("data-service"),
                    "node": e.get_attribute("data-node"),
                    "text": e.text,
                    "visible": e.is_displayed(),
                }
                for e in driver.find_elements(By.CSS_SELECTOR, ".rs.health-down")
            ]
            headers = [
                [th.text for th in t.find_elements(By.TAG_NAME, "th")]
                for t in driver.find_elements(By.CSS_SELECTOR, "#services table")
            ]
            conns = [
                {
                    "service": e.find_element(
                        By.XPATH, "ancestor::div[@data-service]"
                    ).get_attribute("data-service"),
                    "node": e.get_attribute("data-node"),
                    "active": e.find_element(By.CSS_SELECTOR, ".conns").text,
                }
                for e in driver.find_elements(By.CSS_SELECTOR, "#services tr.rs")
            ]
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            shot = out / f"{name}.png"
            driver.save_screenshot(str(shot))
            return {
                "title": driver.title,
                "host": driver.find_element(By.ID, "host").text,
                "sync": driver.find_element(By.ID, "sync").text,
                "vips": vips,
                "down": down,
                "headers": headers,
                "conns": conns,
                "refused": len(driver.find_elements(By.CSS_SELECTOR, "#refused li.bad")),
                "overflow": overflow,
                "screenshot": str(shot),
            }
        finally:
            driver.quit()


def main() -> None:
    url, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "desktop": look(url, out, "status-desktop", 1280, 1000),
        "phone": look(url, out, "status-phone", 390, 844),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
