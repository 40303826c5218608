// The draw-a-digit page: strokes on a canvas, sent as PNG to POST /api/predict; why it
// reads what it reads; corrections (POST /api/correct) and teaching (/api/teach).
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const BRUSH = 20;          // pen width in canvas pixels: MNIST's strokes are ~9% of the digit
const THROTTLE_MS = 150;   // live predictions while drawing, at most this often

let strokes = [];          // each stroke: a list of [x, y] in canvas pixels
let current = null;        // the stroke being drawn
let whiteInk = true;       // white ink on black (as MNIST), or black on white
let lastSent = 0;
let pending = null;        // timer of a throttled prediction
let sequence = 0;          // answers to older requests are ignored
let lastImage = null;      // the image file (canvas PNG or upload) of the reading shown
let classNames = [...Array(10).keys()].map(String);   // the model's, once it has said
let photosOnly = false;    // a model of garments (Fashion-MNIST): photos, no drawing
const TOWARD = [255, 140, 0];    // saliency: orange, pushes toward the class read
const AWAY = [30, 144, 255];     // blue, pushes away from it
const DIM = 0.35;                // the input under the map, dimmed to this share
const why = document.getElementById("why");
const whyCtx = why.getContext("2d", {willReadFrequently: true});
const seen = document.getElementById("seen");
const NOTHING_SEEN = seen.src;   // a black pixel, until the network has seen something

function colours() {
  return whiteInk ? ["#000", "#fff"] : ["#fff", "#000"];
}

function redraw() {
  const [paper, ink] = colours();
  ctx.fillStyle = paper;
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = ink;
  ctx.fillStyle = ink;
  ctx.lineWidth = BRUSH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const stroke of strokes) {
    if (stroke.length === 1) {                       // a dot
      ctx.beginPath();
      ctx.arc(stroke[0][0], stroke[0][1], BRUSH / 2, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    ctx.beginPath();                                 // straight segments between samples
    ctx.moveTo(stroke[0][0], stroke[0][1]);
    for (const [x, y] of stroke.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
          (event.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  if (photosOnly) return;                            // garments are shown, not drawn
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  current = [point(event)];
  strokes.push(current);
  redraw();
});

pad.addEventListener("pointermove", (event) => {
  if (!current) return;
  event.preventDefault();
  const samples = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of (samples.length ? samples : [event])) current.push(point(e));
  redraw();
  schedulePrediction();
});

function endStroke(event) {
  if (!current) return;
  event.preventDefault();
  current = null;
  predictNow();                                      // the final answer on pen-up
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function schedulePrediction() {
  const wait = THROTTLE_MS - (Date.now() - lastSent);
  if (pending) return;
  pending = setTimeout(predictNow, Math.max(0, wait));
}

function predictNow() {
  clearTimeout(pending);
  pending = null;
  if (!strokes.length) return;
  lastSent = Date.now();
  const mine = ++sequence;                           // numbered now: toBlob answers later
  pad.toBlob((blob) => send(blob, mine), "image/png");
}

// One call to the server: its JSON answer, or {error} saying why there is none.
async function api(method, path, body) {
  try {
    const response = await fetch(path, {method, body});
    const answer = await response.json();
    return response.ok ? answer : {error: answer.error || response.statusText};
  } catch (err) {
    return {error: "the server did not answer (" + err.message + ")"};
  }
}

async function send(blob, mine = ++sequence) {
  const answer = await api("POST", "/api/predict", blob);
  if (mine === sequence) show(answer, blob, mine);
}

function show(answer, image, mine) {
  const error = document.getElementById("error");
  if (answer.error) {
    error.textContent = answer.error;
    error.hidden = false;
    return;
  }
  error.hidden = true;
  lastImage = image;
  document.getElementById("digit").textContent = answer.label;
  document.getElementById("correct").hidden = false;
  drawWhy(answer, mine);
  document.getElementById("confidence").textContent =
    (100 * answer.confidence).toFixed(1) + "% sure";
  seen.src = answer.input;
  const probability = Object.fromEntries(answer.top);
  const bars = document.getElementById("bars");
  bars.replaceChildren(...[...Array(10).keys()].map((d) => {
    const item = document.createElement("li");
    item.dataset.digit = d;
    if (d === answer.digit) item.className = "best";
    const percent = 100 * probability[d];
    item.innerHTML = `<b>${d}</b><div class="bar"><span style="width:${percent}%"></span>` +
                     `</div><span>${percent.toFixed(1)}%</span>`;
    return item;
  }));
}

// The saliency map over the input, as `mlp predict --explain` draws it: the input dimmed
// to grey, each pixel coloured by its share of the map's largest magnitude.
function drawWhy(answer, mine) {
  const picture = new Image();
  picture.onload = () => {
    if (mine !== sequence) return;                   // a newer reading is on its way
    whyCtx.drawImage(picture, 0, 0, why.width, why.height);
    const image = whyCtx.getImageData(0, 0, why.width, why.height);
    const px = image.data;
    answer.saliency.map.forEach((row, y) => row.forEach((share, x) => {
      const i = 4 * (28 * y + x);
      const grey = DIM * px[i];
      const colour = share > 0 ? TOWARD : AWAY;
      for (let k = 0; k < 3; k++) px[i + k] = grey + Math.abs(share) * (colour[k] - grey);
      px[i + 3] = 255;
    }));
    whyCtx.putImageData(image, 0, 0);
    why.dataset.reading = answer.label;
    const legend = document.getElementById("why-legend");
    legend.replaceChildren("why: ", span("toward", "orange"), ` pushes toward ${answer.label}; `,
                           span("away", "blue"), " away from it");
  };
  picture.src = answer.input;
}

function span(className, text) {
  const s = document.createElement("span");
  s.className = className;
  s.textContent = text;
  return s;
}

function clearWhy() {
  whyCtx.clearRect(0, 0, why.width, why.height);
  delete why.dataset.reading;
  document.getElementById("why-legend").textContent = "why it reads it";
}

function clearAll() {
  strokes = [];
  current = null;
  clearTimeout(pending);
  pending = null;
  sequence++;                                        // drop answers still on their way
  redraw();
  document.getElementById("digit").textContent = "?";
  document.getElementById("confidence").textContent = "draw a digit";
  seen.src = NOTHING_SEEN;
  document.getElementById("bars").replaceChildren();
  document.getElementById("error").hidden = true;
  document.getElementById("correct").hidden = true;
  lastImage = null;
  clearWhy();
}

document.getElementById("clear").addEventListener("click", clearAll);
document.getElementById("undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  if (strokes.length) predictNow(); else clearAll();
});
document.getElementById("ink").addEventListener("click", (event) => {
  whiteInk = !whiteInk;
  event.target.textContent = whiteInk ? "Black on white" : "White on black";
  event.target.setAttribute("aria-pressed", String(!whiteInk));
  redraw();
  predictNow();
});

function classifyFile(file) {
  if (!file) return;
  strokes = [];
  redraw();
  if (photosOnly) showPhoto(file);
  send(file);
}

// The photo on the pad, fitted whole (a model of garments has no drawing to show).
async function showPhoto(file) {
  try {
    const photo = await createImageBitmap(file);
    const scale = Math.min(pad.width / photo.width, pad.height / photo.height);
    const w = photo.width * scale, h = photo.height * scale;
    ctx.drawImage(photo, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  } catch {
    // not an image the browser decodes: the server's answer says why
  }
}
document.getElementById("file").addEventListener("change", (event) => {
  classifyFile(event.target.files[0]);
  event.target.value = "";
});
pad.addEventListener("dragover", (event) => {
  event.preventDefault();
  pad.classList.add("dropping");
});
pad.addEventListener("dragleave", () => pad.classList.remove("dropping"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dropping");
  classifyFile(event.dataTransfer.files[0]);
});

// ---------------------------------------------------------------- the model panel

function fact(list, name, value) {
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = name;
  dd.textContent = value;
  list.append(dt, dd);
}

function drawCurves(history) {
  const chart = document.getElementById("curves");
  const c = chart.getContext("2d");
  const series = [["val_accuracy", "#d62", "validation error"],
                  ["train_accuracy", "#46a", "training error"]];
  const errors = series.map(([key]) => history.map((row) =>
    row[key] === null ? null : Math.max(1 - row[key], 1e-4)));
  const all = errors.flat().filter((v) => v !== null);
  if (!all.length) return;
  const [lo, hi] = [Math.log10(Math.min(...all)), Math.log10(Math.max(...all))];
  const left = 40, bottom = chart.height - 20, width = chart.width - 50, height = bottom - 10;
  // Long runs come thinned to some epochs, evenly spread: place each at its epoch.
  const first = history[0].epoch, last = history[history.length - 1].epoch;
  const x = (i) => left + width *
    (last > first ? (history[i].epoch - first) / (last - first) : 0.5);
  const y = (v) => bottom - (hi > lo ? (Math.log10(v) - lo) / (hi - lo) : 0.5) * height;
  c.fillStyle = "#fff";
  c.fillRect(0, 0, chart.width, chart.height);
  c.fillStyle = "#555";
  c.font = "11px system-ui";
  c.fillText((100 * 10 ** hi).toPrecision(2) + "%", 2, 14);
  c.fillText((100 * 10 ** lo).toPrecision(2) + "%", 2, bottom);
  c.fillText(`epoch ${first}`, left, chart.height - 4);
  c.textAlign = "right";
  c.fillText(String(last), left + width, chart.height - 4);
  c.textAlign = "left";
  series.forEach(([, colour, label], s) => {
    c.strokeStyle = colour;
    c.beginPath();
    errors[s].forEach((v, i) => v !== null && (i ? c.lineTo(x(i), y(v)) : c.moveTo(x(i), y(v))));
    c.stroke();
    c.fillStyle = colour;
    c.fillText(label, left + 10 + 110 * s, 14);
  });
  chart.hidden = false;
}

// A model of garments reads photos: the pad becomes a place to drop them, with no pen.
function showPhotosOnly() {
  photosOnly = true;
  document.body.classList.add("photos");
  document.title = "mnist-mlp: show a garment";
  document.getElementById("title").textContent = "Show it a garment";
  document.getElementById("intro").textContent = "Drop a photo of a garment (or choose " +
    "one) and the network names it. Beside it is the 28×28 image it actually sees: the " +
    "photo prepared as Fashion-MNIST's were (background trimmed, long side 28, centred, " +
    "negated).";
  document.getElementById("pad-hint").textContent = "Drop a photo on the box.";
  document.getElementById("confidence").textContent = "show it a garment";
  document.getElementById("teach-title").textContent = "Teach it your garments";
  document.getElementById("teach-keeps").textContent = "Each correction keeps your photo.";
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.fillStyle = "#888";
  ctx.font = "18px sans-serif";
  ctx.textAlign = "center";
  ctx.fillText("drop a photo here", pad.width / 2, pad.height / 2);
}

async function loadModel() {
  const info = await (await fetch("/api/model")).json();
  classNames = info.class_names;
  if (info.subject === "garment" && !photosOnly) showPhotosOnly();
  document.getElementById("classes").replaceChildren(...classNames.map((name, label) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.dataset.label = label;
    button.addEventListener("click", () => correct(label));
    return button;
  }));
  const facts = document.getElementById("model-facts");
  facts.replaceChildren();
  fact(facts, info.members > 1 ? `committee of ${info.members}` : "file", info.model);
  fact(facts, "layers", info.sizes.join("-"));
  if (info.preset) fact(facts, "preset", info.preset);
  if (info.epoch !== null) fact(facts, "epoch kept", `${info.epoch} of ${info.epochs}`);
  if (info.kept_val_accuracy !== null && info.kept_val_accuracy !== undefined)
    fact(facts, "validation accuracy", (100 * info.kept_val_accuracy).toFixed(2) + "%");
  const note = document.getElementById("curves-note");
  if (info.history) {
    drawCurves(info.history);
    note.textContent = "error rate per epoch (log scale)";
  } else {
    note.textContent = "no metrics log beside the checkpoint: no curves";
  }
}

// ---------------------------------------------------------------- corrections and teaching

async function correct(label) {
  const saved = document.getElementById("saved");
  if (!lastImage) return;
  const answer = await api("POST", `/api/correct?label=${label}`, lastImage);
  if (answer.error) {
    saved.textContent = answer.error;
    return;
  }
  saved.textContent = `kept as a ${classNames[label]}; Teach when you have a few`;
  showHeld(answer);
}

function showHeld(held) {
  document.getElementById("held-total").textContent = held.total;
  document.getElementById("held").replaceChildren(...held.counts.map((n, label) => {
    const item = document.createElement("li");
    item.dataset.label = label;
    item.innerHTML = `${classNames[label]}: <b>${n}</b>`;
    return item;
  }));
}

async function loadHeld() {
  const held = await api("GET", "/api/samples");
  if (!held.error) showHeld(held);
}

const teachButton = document.getElementById("teach-button");
const teachStatus = document.getElementById("teach-status");
const teachProgress = document.getElementById("teach-progress");
const POLL_MS = 500;

function corrections(n) {
  return `${n} correction${n === 1 ? "" : "s"}`;
}

function showTeach(status) {
  teachButton.disabled = status.state === "running";
  teachProgress.hidden = status.state !== "running";
  if (status.state === "running") {
    const done = status.batches ? (status.epoch - 1) * status.batches + status.batch : 0;
    teachProgress.value = status.batches ? done / (status.epochs * status.batches) : 0;
    teachStatus.textContent = status.batches
      ? `teaching ${corrections(status.samples)}: epoch ${status.epoch} of ${status.epochs}, ` +
        `batch ${status.batch} of ${status.batches} (${status.elapsed_s} s)`
      : `teaching ${corrections(status.samples)}: reading them and MNIST…`;
  } else if (status.state === "done") {
    teachStatus.textContent = `taught ${corrections(status.samples)} in ${status.elapsed_s} s` +
      (status.ending === "stopped" ? ` (stopped at epoch ${status.epoch} of ${status.epochs})` : "") +
      `: now reading with ${status.model}`;
  } else if (status.state === "failed") {
    teachStatus.textContent = "teaching failed: " + status.error;
  }
  teachStatus.dataset.state = status.state;
}

async function follow(status) {
  while (status.state === "running") {
    showTeach(status);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    status = await api("GET", "/api/teach");
    if (status.error) status = {state: "failed", error: status.error};
  }
  showTeach(status);
  if (status.state === "done") {
    await loadModel();                       // the taught model's facts
    if (lastImage) send(lastImage);          // and its reading of the image shown
  }
}

teachButton.addEventListener("click", async () => {
  teachButton.disabled = true;
  const status = await api("POST", "/api/teach");
  if (status.error) {
    teachStatus.textContent = status.error;
    teachButton.disabled = false;
    return;
  }
  follow(status);
});

async function loadTeach() {
  const status = await api("GET", "/api/teach");
  if (status.state === "running") follow(status);   // another tab's teach
  else if (!status.error && status.state !== "idle") showTeach(status);
}

redraw();
loadModel().then(() => Promise.all([loadHeld(), loadTeach()]));
