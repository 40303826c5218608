"""`mlp serve`'s app: the JSON API over real HTTP on loopback, and the page in a real browser."""

from __future__ import annotations

import http.client
import io
import itertools
import json
import os
import shutil
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

from mnist_mlp import imaging, serve
from mnist_mlp.cli import main
from mnist_mlp.server import DigitServer, Limits

from .serving import address, canvas_pngs, json_body, raw, real_server, request, running

server = pytest.fixture(scope="module", name="server")(real_server)
canvas_digits = pytest.fixture(scope="module", name="canvas_digits")(canvas_pngs)


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
    assert info["kept_val_accuracy"] == max(r["val_accuracy"] for r in info["history"])


def test_static_page_and_no_file_system(server):
    conn = http.client.HTTPConnection(*address(server), timeout=10)
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


def test_head_and_methods(server):
    for path in ("/", "/api/model"):
        conn = http.client.HTTPConnection(*address(server), timeout=10)
        conn.request("GET", path)
        got = conn.getresponse()
        full = got.read()
        conn.close()
        answer = raw(server, f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     .encode())
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and body == b"", (path, answer[:200])
        assert f"Content-Length: {len(full)}".encode() in head
        assert got.getheader("Content-Type").encode() in head
    for method in ("PATCH", "OPTIONS", "BREW"):
        status, answer = request(server, method, "/api/model")
        assert status == 405 and f"{method} is not served" in answer["error"]
    for line in (b"get / HTTP/1.1", b"Post /api/predict HTTP/1.1"):
        answer = raw(server, line + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert answer.split(b" ")[1] == b"400" and "method" in json_body(answer)["error"]


# ---------------------------------------------------------------- the app with stand-ins

def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="PNG")
    return out.getvalue()


def test_images_prepared_at_once_are_bounded_and_drawings_skip_the_queue():
    large, small = _png(3000, 3000), _png(280, 280)      # 9 and 0.08 megapixels
    inside, peak, lock = {}, {}, threading.Lock()

    def slow_classify(model, sources):
        kind = "large" if sources[0] == large else "small"
        with lock:
            inside[kind] = inside.get(kind, 0) + 1
            peak[kind] = max(peak.get(kind, 0), inside[kind])
        time.sleep(0.3 if kind == "large" else 0.2)
        with lock:
            inside[kind] -= 1
        return [imaging.ImageError(f"the image: {kind} (stand-in)")]

    app = serve.DigitApp(None, {}, classify_fn=slow_classify, slots=3)
    srv = DigitServer(app, "127.0.0.1", 0, Limits(per_client=30))   # 22 clients, one address
    thread = running(srv)
    try:
        with ThreadPoolExecutor(21) as pool:
            photos = [pool.submit(request, srv, "POST", "/api/predict", large)
                      for _ in range(15)]
            time.sleep(0.2)            # 3 large ones in preparation, 12 waiting
            start = time.monotonic()
            assert request(srv, "GET", "/api/model") == (200, {})    # needs no slot
            assert time.monotonic() - start < 0.5
            drawings = [pool.submit(request, srv, "POST", "/api/predict", small)
                        for _ in range(6)]
            assert all(d.result()[1]["error"].startswith("the image: small") for d in drawings)
            assert time.monotonic() - start < 1.5 and not all(p.done() for p in photos)
            assert all(p.result()[0] == 400 for p in photos)
    finally:
        srv.stop()
        thread.join(10)
    assert peak == {"large": 3, "small": 3}


def test_the_app_keeps_its_own_limits_whatever_serves_it():
    def never(model, sources):
        raise AssertionError("classified a body it should have refused")

    app = serve.DigitApp(None, {}, classify_fn=never)
    for length, expected in ((str(serve.MAX_BODY + 1), "413"), ("", "411"), ("-1", "411")):
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/predict",
                   "CONTENT_LENGTH": length, "wsgi.input": io.BytesIO(b"x")}
        started: list[str] = []
        body = b"".join(app(environ, lambda status, headers, seen=started: seen.append(status)))
        assert started[0].startswith(expected) and "error" in json.loads(body)


def test_an_unexpected_failure_is_a_json_500_and_one_log_line(real_model, tmp_path):
    lines = []

    def broken_classify(model, sources):
        raise KeyError("a decoder's\nsurprise")

    app = serve.DigitApp(None, {}, classify_fn=broken_classify, note=lines.append)
    srv = DigitServer(app, "127.0.0.1", 0)
    thread = running(srv)
    try:
        conn = http.client.HTTPConnection(*address(srv), timeout=10)
        for _ in range(2):                   # the same connection answers again
            conn.request("POST", "/api/predict", body=b"\x89PNG")
            response = conn.getresponse()
            answer = json.loads(response.read())
            assert response.status == 500 and "KeyError" in answer["error"]
        conn.close()
    finally:
        srv.stop()
        thread.join(10)
    assert len(lines) == 2 and all("\n" not in line and "surprise" in line for line in lines)


def test_an_image_no_decoder_can_convert_is_answered(server, tmp_path):
    """A LAB TIFF: whatever imaging raises, the client gets JSON on a live connection:
    400 for an ImageError, 500 for anything else."""
    lab = tmp_path / "lab.tif"
    Image.new("RGB", (64, 64)).convert("LAB").save(lab)
    try:
        imaging.load_digit(lab.read_bytes())
        expected = 200
    except imaging.ImageError:
        expected = 400
    except Exception:  # noqa: BLE001
        expected = 500
    conn = http.client.HTTPConnection(*address(server), timeout=10)
    conn.request("POST", "/api/predict", body=lab.read_bytes())
    response = conn.getresponse()
    assert response.status == expected and "error" in json.loads(response.read())
    conn.request("GET", "/api/model")
    assert conn.getresponse().status == 200
    conn.close()


# ---------------------------------------------------------------- the model panel

def _beside(real_model, tmp_path, log_text: str):
    """A copy of the model with ``log_text`` as its metrics log."""
    model = tmp_path / "m.npz"
    shutil.copy(real_model, model)
    (tmp_path / "m.metrics.jsonl").write_text(log_text)
    return model


def test_a_huge_log_is_read_once_and_thinned(real_model, tmp_path):
    rows = (real_model.parent / f"{real_model.stem}.metrics.jsonl").read_text().splitlines()
    last = json.loads(rows[-1])
    template = json.dumps({**last, "epoch": 0, "kept_epoch": 0})
    head, tail = template.split('"epoch": 0', 1)
    n = 233_000                                  # ~62 MB
    text = "".join(f'{head}"epoch": {i}{tail.replace(": 0}", f": {min(i, 3)}}}")}\n'
                   for i in range(1, n + 1))
    assert len(text) > 60 << 20
    model = _beside(real_model, tmp_path, text)
    srv = DigitServer(serve.DigitApp.load([model]), "127.0.0.1", 0)
    thread = running(srv)
    try:
        start = time.monotonic()
        for _ in range(20):
            conn = http.client.HTTPConnection(*address(srv), timeout=10)
            conn.request("GET", "/api/model")
            body = conn.getresponse().read()
            conn.close()
        assert time.monotonic() - start < 2
    finally:
        srv.stop()
        thread.join(10)
    assert len(body) < 400_000
    epochs = [row["epoch"] for row in json.loads(body)["history"]]
    assert len(epochs) <= serve.MAX_HISTORY_ROWS and epochs == sorted(set(epochs))
    assert epochs[0] == 1 and 3 in epochs and epochs[-1] == n
    assert max(np.diff(epochs)) <= 1.01 * (n - 1) / (serve.MAX_HISTORY_ROWS - 2) + 1


def test_thin_history_keeps_first_kept_and_last():
    rows = [{"epoch": i} for i in range(1, 10_001)]
    for kept in (1, 5, 4321, 10_000):
        thinned = [r["epoch"] for r in serve.thin_history(rows, kept, limit=50)]
        assert len(thinned) <= 50 and {1, kept, 10_000} <= set(thinned)
    assert serve.thin_history(rows[:50], 3, limit=50) == rows[:50]


def test_a_log_with_numbers_beyond_floats_means_no_curves(real_model, tmp_path):
    rows = (real_model.parent / f"{real_model.stem}.metrics.jsonl").read_text()
    first = json.loads(rows.splitlines()[0])
    huge = rows.replace(json.dumps(first["lr"]), "1" + "0" * 400, 1)
    assert huge != rows
    model = _beside(real_model, tmp_path, huge)
    lines = []
    app = serve.DigitApp.load([model], note=lines.append)
    info = json.loads(app.model_json)
    assert info["history"] is None and info["epoch"] == 3
    assert len(lines) == 1 and lines[0].startswith("Warning:") and "m.metrics.jsonl" in lines[0]
    (tmp_path / "m.metrics.jsonl").unlink()          # no log at all: no curves, no warning
    assert json.loads(serve.DigitApp.load([model], note=lines.append).model_json)["history"] \
        is None and len(lines) == 1


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
    result = CliRunner().invoke(main, ["serve", "--model", str(real_model), "--host",
                                       "no-such-host.invalid"])
    assert result.exit_code == 1 and "cannot listen on no-such-host.invalid" in result.output
    assert result.output.count("\n") == 1


# ---------------------------------------------------------------- a real browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "the browser test needs Chromium and ChromeDriver: apt-get install chromium "
            "chromium-driver (Debian), then pip install selenium")
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
        for (x0, y0), (x1, y1) in itertools.pairwise(stroke):
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
        WebDriverWait(browser, 10).until(lambda d, name=name: digit.text == name,
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



_KEPT_AFTER_LARGE_IMAGES = """
import io, sys
from PIL import Image, ImageDraw
from mnist_mlp import serve

def rss_mb():
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) >> 10

img = Image.new("RGB", (4000, 4000), "white")
ImageDraw.Draw(img).line([(2000, 400), (2000, 3600)], fill="black", width=200)
out = io.BytesIO()
img.save(out, format="PNG")
del img
app = serve.DigitApp.load([sys.argv[1]], slots=2)
start = rss_mb()
environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/predict",
           "CONTENT_LENGTH": str(len(out.getvalue()))}
for _ in range(4):
    app(dict(environ, **{"wsgi.input": io.BytesIO(out.getvalue())}), lambda *_: None)
print(rss_mb() - start)
"""


def test_memory_freed_after_large_images_goes_back_to_the_system(real_model):
    """Each image thread would keep the peak of the largest image it decoded in its own
    malloc arena (measured: 69 MB kept after these four 16 MP PNGs in two threads, 3 MB
    with the memory given back)."""
    if serve._malloc_trim() is None or not os.path.exists("/proc/self/status"):
        pytest.skip("needs glibc's malloc_trim and /proc")
    done = subprocess.run([sys.executable, "-c", _KEPT_AFTER_LARGE_IMAGES, str(real_model)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 25, f"{done.stdout.strip()} MB kept after 4 large images"
