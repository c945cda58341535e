"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver, via selenium):
log in with a token, submit the demo job, watch it finish live, see the figures (issue 18).

Screenshots are kept as test artefacts in ``$PTYHPC_TEST_ARTIFACTS`` (default: the pytest temp
folder's ``artifacts/``)."""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from _service import Service, cnt_recipe, create_token, kill_job_processes, write_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service as DriverService

    profile = tempfile.mkdtemp(prefix="ptyhpc-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,2200"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def artefacts(tmp_path_factory):
    d = Path(os.environ.get("PTYHPC_TEST_ARTIFACTS") or tmp_path_factory.getbasetemp() / "artifacts") / "service"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.mark.slow
def test_dashboard_login_submit_watch_figures(browser, artefacts, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    config = write_config(tmp_path, demo_recipe=cnt_recipe(angles=(0, 8, 16), n_iter=2, tomo_iter=5))
    token = create_token(config, "alice")
    service = Service(config).start()
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(service.url + "/")
        assert browser.current_url.endswith("/login")
        browser.find_element(By.ID, "token").send_keys("pty_wrong_token")
        browser.find_element(By.ID, "login").click()
        assert "not valid" in wait.until(EC.presence_of_element_located((By.ID, "login-error"))).text
        browser.find_element(By.ID, "token").send_keys(token)
        browser.save_screenshot(str(artefacts / "01_login.png"))
        browser.find_element(By.ID, "login").click()
        wait.until(EC.presence_of_element_located((By.ID, "new-job"))).click()
        recipe = wait.until(EC.presence_of_element_located((By.ID, "recipe")))
        assert "tilt_000.h5" in recipe.get_attribute("value")          # the demo recipe, prefilled
        browser.save_screenshot(str(artefacts / "02_submit.png"))
        browser.find_element(By.ID, "submit").click()
        wait.until(EC.presence_of_element_located((By.ID, "state")))
        job_url = browser.current_url
        assert "/jobs/" in job_url
        # live progress drawn from the event stream, then the page reloads itself when the job ends
        seen_running = False
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                state = browser.find_element(By.ID, "state").text
                if state == "running" and browser.find_elements(By.CSS_SELECTOR, "#items span"):
                    if not seen_running:
                        browser.save_screenshot(str(artefacts / "03_running.png"))
                    seen_running = True
                if state in ("done", "failed", "cancelled") and browser.find_elements(By.ID, "report"):
                    break
            except Exception:  # noqa: BLE001 - the page is reloading
                pass
            time.sleep(0.2)
        assert browser.find_element(By.ID, "state").text == "done", browser.page_source[:3000]
        imgs = browser.find_elements(By.CSS_SELECTOR, "#figures img")
        names = [i.get_attribute("alt") for i in imgs]
        assert {"figures/ptycho_phase_montage.png", "figures/ptycho_error.png",
                "figures/tomo_orthoslices.png"} <= set(names)
        WebDriverWait(browser, 20).until(lambda d: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 100", i) for i in imgs))
        assert len(browser.find_elements(By.CSS_SELECTOR, "#items span.done")) == 3
        browser.save_screenshot(str(artefacts / "04_done.png"))
        browser.get(service.url + "/")
        assert job_url.rsplit("/", 1)[1][:12] in browser.find_element(By.ID, "jobs").text
        browser.save_screenshot(str(artefacts / "05_jobs.png"))
        print(f"screenshots in {artefacts}")
    finally:
        service.stop()
        kill_job_processes(f"sqlite:///{service.results / 'jobs.db'}")
