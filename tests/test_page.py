"""The upload page in headless Chromium: upload a CSV, see typeset equations, copy the exact ones, see the plot."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_service import _start

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# CI installs the browser (.ci/run), so there a missing one fails instead of skipping
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER) and not os.environ.get("CI"),
                                reason="Debian's chromium and chromium-driver are not installed")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER or "/usr/bin/chromedriver"), options=opts)
    yield driver
    driver.quit()


@pytest.mark.timeout(240)
def test_upload_shows_typeset_equations_copy_button_and_plot(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    t = np.linspace(0, 10, 60)
    csv = tmp_path / "decay.csv"
    csv.write_text("t,N\n" + "".join(f"{a},{3 * np.exp(-0.5 * a)}\n" for a in t))
    proc, url = _start()
    try:
        browser.get(url + "/")
        assert "odeformer" in browser.title
        browser.find_element(By.ID, "file").send_keys(str(csv))
        browser.find_element(By.ID, "submit").click()
        wait = WebDriverWait(browser, 120)
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".math math")))
        maths = browser.find_elements(By.CSS_SELECTOR, ".math math")
        assert maths
        for m in maths:  # MathML is typeset natively: each equation takes real space on the page
            box = browser.execute_script("const r = arguments[0].getBoundingClientRect();"
                                         "return [r.width, r.height];", m)
            assert box[0] > 20 and box[1] > 10, box
        numbers = [n.text for n in browser.find_elements(By.CSS_SELECTOR, ".math math mn")]
        for text in numbers:  # constants shown to at most 4 significant digits, no 1.0 factors
            digits = text.replace("-", "").replace(".", "").lstrip("0")
            assert len(digits) <= 4, text
        assert "1.0" not in numbers
        exact = browser.find_elements(By.CSS_SELECTOR, "code.equation")
        assert exact and exact[0].get_attribute("textContent").startswith("dN/dt = ")
        copy = browser.find_element(By.CSS_SELECTOR, "button.copy")
        copy.click()
        wait.until(lambda d: copy.get_attribute("data-copied"))
        assert copy.get_attribute("data-copied").split("\n")[0] == exact[0].get_attribute("textContent")
        img = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "img.plot")))
        assert img.get_attribute("src").startswith("data:image/png;base64,")
        assert browser.execute_script("return arguments[0].naturalWidth", img) > 100  # the PNG decoded
        link = browser.find_element(By.ID, "download-link")
        assert link.get_attribute("download") == "odeformer-results.json"
        browser.save_screenshot(str(Path(os.environ.get("ODEFORMER_SCREENSHOT", tmp_path / "page.png"))))
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.timeout(240)
def test_ambiguous_fit_shows_the_badge_rivals_and_their_diverging_predictions(browser, tmp_path):
    """A pendulum seen at 0.1 rad (sin(theta) ~ theta): the page marks the result ambiguous, names the
    rivals and plots their predictions from the suggested initial state (docs/ambiguity.md)."""
    from scipy.integrate import solve_ivp
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    t = np.linspace(0, 5, 100)
    x = solve_ivp(lambda tt, y: [y[1], -4.0 * np.sin(y[0])], (0, 5), [0.1, 0.0], t_eval=t, rtol=1e-10,
                  atol=1e-12).y.T
    x = x * (1 + 0.01 * np.random.default_rng(0).standard_normal(x.shape))
    csv = tmp_path / "pendulum.csv"
    csv.write_text("t,theta,omega\n" + "".join(f"{a},{b},{c}\n" for a, (b, c) in zip(t, x)))
    proc, url = _start()
    try:
        browser.get(url + "/")
        browser.find_element(By.ID, "file").send_keys(str(csv))
        browser.find_element(By.ID, "submit").click()
        wait = WebDriverWait(browser, 150)
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".math math")))
        badge = browser.find_element(By.CSS_SELECTOR, ".badge.ambiguous")
        assert badge.text == "ambiguous"
        rivals = browser.find_element(By.CSS_SELECTOR, ".ambiguity .rivals").text
        assert "rivals of #1: #" in rivals and "nats behind" in rivals
        assert browser.find_elements(By.CSS_SELECTOR, ".cand .badge.rival")  # the rivals' own blocks say so
        assert "start at theta = " in browser.find_element(By.CSS_SELECTOR, ".experiment .suggestion").text
        plots = browser.find_elements(By.CSS_SELECTOR, "svg.experiment-plot")
        assert [p.get_attribute("data-variable") for p in plots] == ["theta", "omega"]
        for plot in plots:
            paths = plot.find_elements(By.CSS_SELECTOR, "path.prediction")
            assert len(paths) >= 2 and paths[0].get_attribute("data-rank") == "1"
            ends = []
            for path in paths:
                points = path.get_attribute("d").split()
                assert len(points) > 50  # a drawn trajectory, not a stub
                ends.append(points[-1])
            assert len(set(ends)) > 1  # the predictions diverge
            box = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];",
                                         plot)
            assert box[0] > 300 and box[1] > 100
        browser.save_screenshot(str(Path(os.environ.get("ODEFORMER_AMBIGUITY_SCREENSHOT", tmp_path / "amb.png"))))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
