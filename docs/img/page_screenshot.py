"""Screenshot of the upload page (docs/img/page.png): the default model on a damped pendulum, headless Chromium.

Run from the repository root (needs Debian's chromium and chromium-driver, selenium, Pillow):
    python docs/img/page_screenshot.py docs/img/page.png
"""

import base64
import io
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
from PIL import Image
from scipy.integrate import solve_ivp
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait


def main(out: str) -> None:
    # damped pendulum: theta' = omega, omega' = -0.25 omega - 4 sin(theta)
    sol = solve_ivp(lambda t, y: [y[1], -0.25 * y[1] - 4 * np.sin(y[0])], (0, 10), [1.2, 0.0],
                    t_eval=np.linspace(0, 10, 120), rtol=1e-9, atol=1e-9)
    tmp = tempfile.mkdtemp()
    csv = f"{tmp}/pendulum.csv"
    with open(csv, "w") as f:
        f.write("t,theta,omega\n" + "".join(f"{t:.4f},{a:.6f},{b:.6f}\n" for t, a, b in zip(sol.t, *sol.y)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1000,1400", "--force-device-scale-factor=1", f"--user-data-dir={tmp}/profile"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(url + "/")
        driver.find_element(By.ID, "file").send_keys(csv)
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 120).until(ec.visibility_of_element_located((By.CSS_SELECTOR, "img.plot")))
        driver.find_element(By.CSS_SELECTOR, "details.exact summary").click()  # show the exact strings of #1
        time.sleep(0.5)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        cut = driver.execute_script("const e = document.querySelectorAll('.cand')[2];"
                                    "return e ? e.getBoundingClientRect().top + window.scrollY : null")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1000, "height": int(height), "scale": 1}})
        img = Image.open(io.BytesIO(base64.b64decode(shot["data"])))
        img.crop((0, 0, 1000, int(cut or height) - 8)).save(out, optimize=True)  # up to candidate #3
    finally:
        driver.quit()
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/page.png")
