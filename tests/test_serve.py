"""`mlp serve`: the JSON API over real HTTP on loopback, and the page in a real browser."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mnist_mlp import serve
from mnist_mlp.cli import main
from mnist_mlp.dataset import DataSource

from .digit_images import canvas_png


@pytest.fixture(scope="module")
def server(real_model):
    srv = serve.DigitServer(real_model, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def canvas_digits(real_mnist, tmp_path_factory):
    """40 real test digits as canvas PNGs (white strokes on transparency)."""
    folder = tmp_path_factory.mktemp("canvas")
    images, labels = DataSource(real_mnist).load("test", flat=False)
    pick = np.random.default_rng(1).choice(len(images), 40, replace=False)
    return [(canvas_png(images[i] / 255.0, folder / f"{j:02d}.png"), int(labels[i]))
            for j, i in enumerate(pick)]


def test_canvas_pngs_read_as_mlp_predict_reads_them(server, real_model, canvas_digits):
    files = [str(p) for p, _ in canvas_digits]
    result = CliRunner().invoke(main, ["predict", "--model", str(real_model), "--json",
                                       "--top-k", "10", *files])
    assert result.exit_code == 0, result.output
    expected = json.loads(result.stdout)
    correct = 0
    for (path, label), cli_row in zip(canvas_digits, expected):
        status, answer = request(server, "POST", "/api/predict", path.read_bytes())
        assert status == 200, answer
        assert answer["digit"] == cli_row["digit"]
        # The same code path; only the batch differs (40 images there, 1 here), so BLAS
        # may round the last bits differently.
        assert len(answer["top"]) == 10
        np.testing.assert_allclose([p for _, p in answer["top"]],
                                   [p for _, p in cli_row["top"]], rtol=1e-5, atol=1e-7)
        assert answer["input"].startswith("data:image/png;base64,")
        correct += answer["digit"] == label
    assert correct >= 36, f"{correct} of 40 canvas digits read right"


def test_model_info(server):
    status, info = request(server, "GET", "/api/model")
    assert status == 200
    assert info["sizes"] == [784, 128, 10] and info["preset"] == "quick"
    assert info["epoch"] == 3 and info["epochs"] == 3
    assert len(info["history"]) == 3 and info["history"][-1]["epoch"] == 3
    assert info["val_accuracy"] == max(r["val_accuracy"] for r in info["history"])


def test_static_page_and_no_file_system(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200 and b'<canvas id="pad"' in response.read()
    conn.close()
    for path in ("/../../etc/passwd", "/web/index.html", "/serve.py", "/%2e%2e/pyproject.toml"):
        status, answer = request(server, "GET", path)
        assert status == 404 and "no such page" in answer["error"]


def test_error_statuses(server, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGBA", (280, 280), (0, 0, 0, 0)).save(blank)
    cases = [
        (("POST", "/api/predict", b"not an image"), 400, "not an image file"),
        (("POST", "/api/predict", blank.read_bytes()), 400, "looks blank"),
        (("GET", "/nope"), 404, "no such page"),
        (("GET", "/api/predict"), 405, "POST an image"),
        (("POST", "/"), 405, "POST goes to /api/predict"),
        (("PUT", "/api/predict", b"x"), 405, "PUT is not served"),
        (("DELETE", "/"), 405, "DELETE is not served"),
    ]
    for args, expected, message in cases:
        status, answer = request(server, *args)
        assert status == expected and message in answer["error"], (args[:2], answer)


def _raw(srv, head: bytes, body: bytes = b"") -> bytes:
    """Send raw bytes; the answer, read until the server closes the connection."""
    with socket.create_connection(srv.server_address[:2], timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_oversized_body_refused_before_it_is_read(server):
    start = time.monotonic()
    answer = _raw(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: "
                  + str(2**40).encode() + b"\r\n\r\n", b"\x89PNG")
    assert answer.startswith(b"HTTP/1.1 413") and b"over 8 MB" in answer
    assert time.monotonic() - start < 5
    answer = _raw(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411")


def test_a_client_leaving_mid_body_does_not_disturb_others(server, canvas_digits):
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                     b"only a little")
    silent = socket.create_connection(server.server_address[:2], timeout=10)  # says nothing
    try:
        status, _ = request(server, "POST", "/api/predict", canvas_digits[0][0].read_bytes())
        assert status == 200
    finally:
        silent.close()


def test_concurrent_clients(server, canvas_digits):
    bodies = [(p.read_bytes(), request(server, "POST", "/api/predict", p.read_bytes())[1])
              for p, _ in canvas_digits[:8]]

    def client(i: int) -> int:
        body, expected = bodies[i]
        ok = 0
        for _ in range(25):
            status, answer = request(server, "POST", "/api/predict", body)
            ok += status == 200 and answer["top"] == expected["top"]
        return ok

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(client, range(8))) == [25] * 8


# ---------------------------------------------------------------- the command

def test_bad_model_and_port_in_use_are_one_line(real_model, tmp_path):
    result = CliRunner().invoke(main, ["serve", "--model", str(tmp_path / "none.npz")])
    assert result.exit_code == 1 and "no such checkpoint" in result.output
    assert result.output.count("\n") == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--model", str(real_model), "--port",
                                           str(port)])
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output
    assert result.output.count("\n") == 1


def test_other_addresses_are_warned_about(real_model, monkeypatch):
    monkeypatch.setattr(serve, "is_loopback", lambda host: False)
    monkeypatch.setattr(serve.DigitServer, "serve_forever",
                        lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    result = CliRunner().invoke(main, ["serve", "--model", str(real_model), "--port", "0"])
    assert result.exit_code == 0
    assert "anyone who can reach this machine" in result.stderr


def test_is_loopback():
    assert serve.is_loopback("127.0.0.1") and serve.is_loopback("::1")
    assert serve.is_loopback("localhost")
    assert not serve.is_loopback("0.0.0.0") and not serve.is_loopback("192.0.2.1")


def test_ctrl_c_stops_cleanly(real_model):
    proc = subprocess.Popen([sys.executable, "-m", "mnist_mlp", "serve", "--model",
                             str(real_model), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "serving" in line and "http://127.0.0.1:" in line
    url = line.split(" at ")[1].split()[0]
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/api/model")
    assert conn.getresponse().status == 200
    conn.close()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err


# ---------------------------------------------------------------- a real browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        (pytest.fail if os.environ.get("CI") else pytest.skip)("the browser test needs Chromium and ChromeDriver: apt-get install "
                    "chromium chromium-driver (Debian), then pip install selenium")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1100,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    os.environ.setdefault("SE_AVOID_STATS", "true")
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


# Strokes in CSS pixels from the pad's centre (the pad is 336 px square).
DRAWINGS = {
    "1": [[(0, y) for y in range(-110, 111, 10)]],
    "7": [[(x, -100) for x in range(-70, 71, 10)],
          [(70 - 8 * i, -100 + 21 * i) for i in range(11)]],
    "0": [[(round(60 * np.sin(t)), round(-100 * np.cos(t)))
           for t in np.linspace(0, 2 * np.pi, 37)]],
}


def _draw_with_mouse(driver, pad, strokes):
    from selenium.webdriver import ActionChains

    for stroke in strokes:
        actions = ActionChains(driver).move_to_element_with_offset(pad, *stroke[0])
        actions.click_and_hold()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            actions.move_by_offset(x1 - x0, y1 - y0)
        actions.release().perform()


def _draw_with_touch(driver, pad, strokes):
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    for stroke in strokes:
        builder = ActionBuilder(driver, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))
        builder.pointer_action.move_to(pad, *stroke[0]).pointer_down()
        for x, y in stroke[1:]:
            builder.pointer_action.move_to(pad, x, y)
        builder.pointer_action.pointer_up()
        builder.perform()


def test_drawing_in_a_real_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url)
    pad = browser.find_element(By.ID, "pad")
    digit = browser.find_element(By.ID, "digit")
    seen = browser.find_element(By.ID, "seen")
    WebDriverWait(browser, 10).until(
        lambda d: "784-128-10" in d.find_element(By.ID, "model-facts").text)
    blank_input = seen.get_attribute("src")
    scroll = browser.execute_script("return window.scrollY")
    for name, draw in (("1", _draw_with_mouse), ("7", _draw_with_touch),
                       ("0", _draw_with_mouse)):
        draw(browser, pad, DRAWINGS[name])
        WebDriverWait(browser, 10).until(lambda d: digit.text == name,
                                         f"the page did not read the drawn {name}")
        assert seen.get_attribute("src").startswith("data:image/png;base64,")
        assert seen.get_attribute("src") != blank_input
        # Read in one step: a later answer may redraw the bars meanwhile.
        classes = browser.execute_script(
            "return [...document.querySelectorAll('#bars li')].map(li => li.className)")
        assert len(classes) == 10 and classes[int(name)] == "best"
        if name == "0":
            shot = tmp_path / "mlp-serve.png"
            browser.save_screenshot(str(shot))
            print("screenshot:", shot)
            assert shot.stat().st_size > 10_000
        browser.find_element(By.ID, "clear").click()
        WebDriverWait(browser, 5).until(lambda d: digit.text == "?")
        assert seen.get_attribute("src") == blank_input
        assert not browser.find_elements(By.CSS_SELECTOR, "#bars li")
    assert browser.execute_script("return window.scrollY") == scroll, "drawing scrolled"
    assert browser.execute_script(
        "return getComputedStyle(document.getElementById('pad')).touchAction") == "none"


def test_connections_beyond_the_cap_get_503(real_model, canvas_digits, monkeypatch):
    monkeypatch.setattr(serve, "MAX_CLIENTS", 3)
    srv = serve.DigitServer(real_model, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    silent = [socket.create_connection(srv.server_address[:2], timeout=10) for _ in range(3)]
    try:
        time.sleep(0.3)
        status, answer = request(srv, "GET", "/api/model")
        assert status == 503 and answer == {"error": "too many clients at once"}
    finally:
        for sock in silent:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:             # the slots come back as the threads end
        try:
            status, _ = request(srv, "POST", "/api/predict", canvas_digits[0][0].read_bytes())
        except (ConnectionError, json.JSONDecodeError):
            status = None
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200
    srv.shutdown()
    srv.server_close()
