// polymodal web page: a form built from GET /v1/schema, predictions drawn as bars, generated
// text shown and read aloud by the browser's own speech synthesis, generated images and sounds
// (any prediction value that is a data: URL of one) shown and played.
// Plain JavaScript, no build step, no CDN: works offline from the server alone.
"use strict";

const state = { schema: null, captured: new Map(), searchFile: null }; // captured: column -> Blob from camera or microphone
const $ = (selector) => document.querySelector(selector);

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function headers() {
  const key = $("#api-key").value.trim();
  if (key) sessionStorage.setItem("polymodal-api-key", key);
  return key ? { "X-API-Key": key } : {};
}

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

function setStatus(message) {
  $("#status").textContent = message || "";
}

async function fetchJson(url, options = {}) {
  const response = await fetch(url, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

// ------------------------------------------------------------------ the form
async function loadSchema() {
  try {
    state.schema = await fetchJson("/v1/schema");
  } catch (error) {
    $("#model-summary").textContent = "Could not read the model's schema.";
    showError(error.message + (/API key/.test(error.message) ? " — enter it above." : ""));
    return;
  }
  showError("");
  const targets = state.schema.targets.map((t) => `${t.column} (${t.task})`).join(", ");
  const count = state.schema.inputs.length;
  $("#model-summary").textContent = `Predicts ${targets} from ${count} input${count === 1 ? "" : "s"}.`;
  const fields = $("#fields");
  fields.replaceChildren(...state.schema.inputs.map(fieldFor));
  $("#predict-button").disabled = false;
  $("#explain-button").disabled = false;
  setupGenerate(state.schema.targets.filter((target) => target.generates));
  setupSearch(state.schema.search);
}

function fieldFor(field, index) {
  const id = `input-${index}`;
  const label = element("label", { for: id, text: field.name }, [element("span", { class: "kind", text: field.kind })]);
  const box = element("div", { class: "field", "data-column": field.name, "data-kind": field.kind }, [label]);
  if (field.file) {
    const input = element("input", { type: "file", id, name: field.name, accept: field.accept, "data-column": field.name });
    const preview = element("div", { class: "preview", id: `preview-${index}` });
    input.addEventListener("change", () => {
      state.captured.delete(field.name);
      if (input.files[0]) showPreview(preview, field.widget.preview, input.files[0]);
      else preview.replaceChildren();
    });
    box.append(input, captureControls(field, index, preview), preview);
    box.append(element("div", { class: "muted", text: field.formats.join(", ") }));
  } else if (field.widget.control === "select" && field.categories && field.categories.length) {
    const select = element("select", { id, name: field.name, "data-column": field.name }, [element("option", { value: "", text: "(missing)" })]);
    for (const value of field.categories) select.append(element("option", { value, text: value }));
    box.append(select);
  } else if (field.widget.control === "textarea") {
    box.append(element("textarea", { id, name: field.name, "data-column": field.name }));
  } else {
    const type = field.widget.control === "number" ? "number" : "text";
    box.append(element("input", { type, step: type === "number" ? "any" : null, id, name: field.name, "data-column": field.name }));
  }
  return box;
}

function showPreview(preview, tag, blob) {
  const url = URL.createObjectURL(blob);
  const media = element(tag, { src: url, alt: "preview" });
  if (tag !== "img") media.controls = true;
  preview.replaceChildren(media);
}

function captureControls(field, index, preview) {
  const controls = element("div", { class: "capture" });
  const media = navigator.mediaDevices && navigator.mediaDevices.getUserMedia;
  if (!media) return controls;
  if (field.widget.capture === "camera") controls.append(cameraButton(field, index, preview));
  if (field.widget.capture === "microphone" && window.MediaRecorder) {
    controls.append(recordButton(`record-${index}`, (file) => {
      state.captured.set(field.name, file);
      showPreview(preview, field.widget.preview, file);
      if (state.schema.inputs.every(filled)) {
        setStatus("Recorded; predicting…");
        $("#predict-form").requestSubmit();
      }
    }));
  }
  return controls;
}

// ------------------------------------------------------- camera snapshot (PNG)
function cameraButton(field, index, preview) {
  const button = element("button", { type: "button", id: `camera-${index}`, text: "Use camera" });
  let stream = null;
  button.addEventListener("click", async () => {
    if (!stream) {
      try {
        stream = await navigator.mediaDevices.getUserMedia({ video: true });
      } catch (error) {
        showError(`camera not available: ${error.message}`);
        return;
      }
      const video = element("video", { autoplay: "", playsinline: "" });
      video.srcObject = stream;
      preview.replaceChildren(video);
      button.textContent = "Take snapshot";
      return;
    }
    const video = preview.querySelector("video");
    const canvas = element("canvas");
    canvas.width = video.videoWidth || 320;
    canvas.height = video.videoHeight || 240;
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    stream.getTracks().forEach((track) => track.stop());
    stream = null;
    button.textContent = "Use camera";
    canvas.toBlob((blob) => {
      state.captured.set(field.name, new File([blob], "snapshot.png", { type: "image/png" }));
      showPreview(preview, field.widget.preview, blob);
    }, "image/png");
  });
  return button;
}

// ----------------------------------------------- microphone recording (WAV)
// `onRecorded(file)` gets the recording as a WAV file. For a form field, when the recording was
// the last input missing, it is sent at once: a spoken question in, the model's answer (or
// transcript) out, without pressing Predict; for search, it is the query.
function recordButton(id, onRecorded) {
  const button = element("button", { type: "button", id, class: "record", text: "Record", "aria-pressed": "false" });
  let recorder = null;
  button.addEventListener("click", async () => {
    if (recorder) { recorder.stop(); return; }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      showError(`microphone not available: ${error.message}`);
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
    recorder.addEventListener("stop", async () => {
      stream.getTracks().forEach((track) => track.stop());
      recorder = null;
      button.textContent = "Record";
      button.setAttribute("aria-pressed", "false");
      const recorded = new Blob(chunks, { type: chunks[0] ? chunks[0].type : "audio/webm" });
      const file = await toWav(recorded).catch(() => new File([recorded], "recording.webm", { type: recorded.type }));
      onRecorded(file);
    });
    recorder.start();
    button.textContent = "Stop";
    button.setAttribute("aria-pressed", "true");
    showError("");
    setStatus("Recording… press Stop when done.");
  });
  return button;
}

async function toWav(blob) {
  // Decode what the browser recorded (WebM/Ogg) and write 16-bit mono PCM WAV, which every
  // server build reads without FFmpeg.
  const context = new (window.AudioContext || window.webkitAudioContext)();
  try {
    const audio = await context.decodeAudioData(await blob.arrayBuffer());
    const samples = new Float32Array(audio.length);
    for (let channel = 0; channel < audio.numberOfChannels; channel++) {
      const data = audio.getChannelData(channel);
      for (let i = 0; i < data.length; i++) samples[i] += data[i] / audio.numberOfChannels;
    }
    return new File([wavBytes(samples, audio.sampleRate)], "recording.wav", { type: "audio/wav" });
  } finally {
    context.close();
  }
}

function wavBytes(samples, rate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const text = (offset, value) => [...value].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, samples.length * 2, true);
  samples.forEach((s, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, s)) * 0x7fff, true));
  return buffer;
}

// -------------------------------------------------------------- requests
function fieldValue(field) {
  // A File for a file column (recorded, snapshot or chosen), else the control's text; null if empty.
  const input = document.querySelector(`[data-column="${CSS.escape(field.name)}"]:is(input, select, textarea)`);
  if (field.file) return state.captured.get(field.name) || (input.files && input.files[0]) || null;
  return input.value.trim() !== "" ? input.value : null;
}

function filled(field) {
  return fieldValue(field) !== null;
}

function formData() {
  const data = new FormData();
  let count = 0;
  for (const field of state.schema.inputs) {
    const value = fieldValue(field);
    if (value === null) continue;
    if (field.file) data.append(field.name, value, value.name || "upload");
    else data.append(field.name, value);
    count++;
  }
  return count ? data : null;
}

const ACTIONS = ["#predict-button", "#explain-button", "#generate-button"];

async function send(endpoint, extra = {}) {
  // The form's inputs, plus `extra` fields (sampling settings), posted as multipart.
  showError("");
  const data = formData();
  if (!data) { showError("Fill in at least one input."); return null; }
  for (const [name, value] of Object.entries(extra)) data.append(name, value);
  setStatus("Working…");
  ACTIONS.forEach((id) => { $(id).disabled = true; });
  try {
    return await fetchJson(endpoint, { method: "POST", body: data });
  } catch (error) {
    showError(error.message);
    return null;
  } finally {
    setStatus("");
    ACTIONS.forEach((id) => { $(id).disabled = false; });
  }
}

function bars(entries, chosen) {
  const grid = element("div", { class: "bars" });
  const largest = Math.max(1e-9, ...entries.map(([, v]) => Math.abs(v)));
  for (const [name, value] of entries) {
    const width = `${(100 * Math.abs(value) / largest).toFixed(1)}%`;
    const classes = ["bar", name === chosen ? "chosen" : "", value < 0 ? "negative" : ""].join(" ").trim();
    const bar = element("div", { class: classes });
    bar.style.width = width; // CSSOM, allowed by the page's Content-Security-Policy
    grid.append(element("span", { class: "name", text: name }), element("div", { class: "bar-track" }, [bar]),
      element("span", { class: "value", text: value.toFixed(3) }));
  }
  return grid;
}

function targetInfo(column) {
  return state.schema.targets.find((target) => target.column === column) || {};
}

function showPrediction(body) {
  const row = body.predictions[0];
  const sections = Object.entries(row).map(([target, prediction], index) => {
    const section = targetInfo(target).text ? textSection(target, prediction, index) : valueSection(target, prediction, index);
    const media = mediaOf(prediction, `${target} (generated)`);
    if (media.length) section.append(element("div", { class: "media", "data-target": target }, media));
    return section;
  });
  showResult(sections, body.warnings);
}

function showResult(sections, warnings) {
  const result = $("#result");
  for (const warning of warnings || []) sections.push(element("p", { class: "muted", text: `note: ${warning.column}: ${warning.message}` }));
  result.replaceChildren(...sections);
  result.dataset.state = "done";
}

function valueSection(target, prediction, index) {
  // A label with its class probabilities as bars, a number, or (a generated file) the name alone.
  if (isMedia(prediction.predicted)) return element("section", { class: "target", "data-target": target }, [element("h3", { text: target })]);
  const predicted = Array.isArray(prediction.predicted) ? prediction.predicted.join(", ") || "(none)" : String(prediction.predicted);
  const heading = element("h3", {}, [`${target}: `, element("span", { class: "predicted", id: `predicted-${index}`, "data-target": target, text: predicted })]);
  const section = element("section", { class: "target", "data-target": target }, [heading]);
  if (prediction.probabilities) {
    const entries = Object.entries(prediction.probabilities).sort((a, b) => b[1] - a[1]).slice(0, 20);
    section.append(bars(entries, predicted));
  }
  return section;
}

// ------------------------------------------------- generated images and sounds
// Whatever the task, a prediction value that is a data: URL of an image is shown as an <img>
// and one of a sound as an <audio> player.
function isMedia(value) {
  return typeof value === "string" && /^data:(image|audio)\//.test(value);
}

function mediaOf(prediction, label) {
  return Object.values(prediction).filter(isMedia).map((url) => {
    if (url.startsWith("data:image/")) return element("img", { src: url, alt: label, title: label });
    const player = element("audio", { src: url, "aria-label": label, preload: "metadata" });
    player.controls = true;
    return player;
  });
}

function setupGenerate(generated) {
  // Offered when the model has a generated target (an image target, a piece of music).
  $("#generate-options").hidden = $("#generate-button").hidden = generated.length === 0;
  $("#generate-button").disabled = generated.length === 0;
}

function samplingFields() {
  // The settings typed in; an empty seed gets a random one, shown with the result to repeat it.
  const fields = {};
  for (const name of ["guidance", "steps", "samples"]) {
    const value = $(`#generate-${name}`).value.trim();
    if (value !== "") fields[name] = value;
  }
  const seed = $("#generate-seed").value.trim();
  fields.seed = seed !== "" ? seed : String(Math.floor(Math.random() * 2 ** 31));
  return fields;
}

function showGenerated(body) {
  const used = Object.entries(body.settings).map(([target, settings]) =>
    `${target}: ${Object.entries(settings).map(([key, value]) => `${key} ${value}`).join(", ")}`);
  const gallery = element("div", { class: "samples" });
  body.generated[0].forEach((sample, number) => {
    for (const [target, prediction] of Object.entries(sample)) {
      const label = `${target}, sample ${number + 1}`;
      const figure = element("figure", { class: "sample", "data-target": target, "data-sample": number }, mediaOf(prediction, label));
      const text = isMedia(prediction.predicted) ? "" : `: ${prediction.predicted}`;
      figure.append(element("figcaption", { text: `${label}${text}` }));
      gallery.append(figure);
    }
  });
  const heading = element("h3", { text: "Generated" });
  showResult([heading, element("p", { class: "muted generate-settings", text: used.join("; ") }), gallery], body.warnings);
}

// ------------------------------------------------ generated text, read aloud
function textSection(target, prediction, index) {
  const text = String(prediction.predicted);
  const shown = element("p", { class: "predicted transcript", id: `predicted-${index}`, "data-target": target, text });
  if (!text) shown.classList.add("empty"); // the stylesheet writes "(no text)"
  const section = element("section", { class: "target text", "data-target": target }, [element("h3", { text: target }), shown]);
  const actions = element("div", { class: "actions" });
  if (window.speechSynthesis && window.SpeechSynthesisUtterance) {
    const button = element("button", { type: "button", class: "speak", id: `speak-${index}`, "data-target": target, text: "Read aloud" });
    button.disabled = !text;
    button.addEventListener("click", () => speak(text));
    actions.append(button);
  }
  if (typeof prediction.log_probability === "number") {
    const score = prediction.log_probability;
    actions.append(element("span", { class: "muted log-probability", "data-target": target, text: `log-probability ${score.toFixed(3)} (p = ${Math.exp(score).toPrecision(3)})` }));
  }
  section.append(actions);
  if (Array.isArray(prediction.nbest) && prediction.nbest.length > 1) {
    const items = prediction.nbest.map((hypothesis) => element("li", {}, [
      element("span", { class: "nbest-text", text: hypothesis.text || "(no text)" }),
      element("span", { class: "muted nbest-score", text: ` ${hypothesis.log_probability.toFixed(3)}` }),
    ]));
    section.append(element("details", { class: "nbest" }, [
      element("summary", { text: `${items.length} best hypotheses` }), element("ol", {}, items),
    ]));
  }
  return section;
}

function speak(text) {
  // The browser's own speech synthesis: nothing is sent to this server or any other. A voice
  // the browser marks as local is preferred over one that may be a remote service.
  const synthesis = window.speechSynthesis;
  synthesis.cancel(); // one utterance at a time
  const utterance = new SpeechSynthesisUtterance(text);
  const local = synthesis.getVoices().filter((voice) => voice.localService);
  const language = (navigator.language || "").split("-")[0];
  const voice = local.find((v) => v.default) || local.find((v) => v.lang.startsWith(language)) || local[0];
  if (voice) utterance.voice = voice;
  synthesis.speak(utterance);
}

function showExplanation(body) {
  const box = $("#explanation");
  const row = body.explanations[0];
  const parts = [element("h3", { text: "Contribution of each input" }), element("p", { class: "muted", text: body.method })];
  for (const [target, explanation] of Object.entries(row)) {
    parts.push(element("p", { text: `${target} = ${explanation.predicted}: ${explanation.explained} ${explanation.value.toFixed(3)} (all inputs masked: ${explanation.base.toFixed(3)})` }));
    parts.push(bars(Object.entries(explanation.contributions), null));
  }
  box.replaceChildren(...parts);
  box.hidden = false;
}

// ------------------------------------------------------------------ search
// Shown when the server searches a vector index (polymodal serve --index): a typed text or a
// file (chosen or recorded) is the query; hits come back as cards, files fetched by their id.
const QUERY_MEDIA = { image: "image/*", audio: "audio/*", video: "video/*" };

function setupSearch(info) {
  const section = $("#search-section");
  section.hidden = !info;
  if (!info) return;
  const kinds = info.query_kinds;
  const order = info.metric === "l2" ? "lower scores are nearer" : "higher scores are nearer";
  $("#search-summary").textContent = `${info.rows} vectors of ${info.column} (${info.kind}), by ${info.metric}: ${order}.`;
  const text = $("#search-text");
  text.hidden = !kinds.includes("text");
  const file = $("#search-file");
  const accepted = kinds.filter((kind) => QUERY_MEDIA[kind]).map((kind) => QUERY_MEDIA[kind]);
  file.hidden = accepted.length === 0;
  file.accept = accepted.join(",");
  const capture = $("#search-capture");
  capture.replaceChildren();
  const media = navigator.mediaDevices && navigator.mediaDevices.getUserMedia;
  if (kinds.includes("audio") && media && window.MediaRecorder) {
    capture.append(recordButton("search-record", (recorded) => {
      state.searchFile = recorded;
      text.value = "";
      file.value = "";
      showPreview($("#search-preview"), "audio", recorded);
      $("#search-form").requestSubmit();
    }));
  }
  const select = $("#search-k");
  for (const option of select.options) option.disabled = Number(option.value) > info.max_k;
  $("#search-by-class-label").hidden = !info.by_class;
}

function queryFile() {
  return state.searchFile || $("#search-file").files[0] || null;
}

function queryKind(file) {
  // The multipart field is named after the file's kind; the server checks the bytes anyway.
  const major = (file.type || "").split("/")[0];
  if (QUERY_MEDIA[major]) return major;
  const indexed = state.schema.search.kind;
  return QUERY_MEDIA[indexed] ? indexed : "image";
}

function showSearchError(message) {
  const box = $("#search-error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function runSearch(event) {
  event.preventDefault();
  showSearchError("");
  const text = $("#search-text").value.trim();
  const file = queryFile();
  if (!text && !file) { showSearchError("Type a text or choose a file to search for."); return; }
  const data = new FormData();
  if (text) data.append("text", text);
  else data.append(queryKind(file), file, file.name || "query");
  data.append("k", $("#search-k").value);
  if (state.schema.search.by_class && $("#search-by-class").checked) data.append("by_class", "true");
  const results = $("#search-results");
  results.dataset.state = "working";
  $("#search-button").disabled = true;
  try {
    showHits(await fetchJson("/v1/search", { method: "POST", body: data }));
  } catch (error) {
    showSearchError(error.message);
    results.dataset.state = "error";
  } finally {
    $("#search-button").disabled = false;
  }
}

function showHits(body) {
  const results = $("#search-results");
  const note = body.query_column !== body.indexed_column
    ? ` (the query went through ${body.query_column}; the index holds ${body.indexed_column})` : "";
  const named = body.query_class
    ? `, of class ${body.query_class.name} (the query's similarity to it ${body.query_class.similarity.toFixed(3)})` : "";
  const summary = element("p", { class: "muted", text: `${body.hits.length} nearest${note}${named}.` });
  const gallery = element("div", { class: "hits" }, body.hits.map(hitCard));
  results.replaceChildren(summary, gallery);
  results.dataset.state = "done";
}

function hitCard(hit) {
  const card = element("figure", { class: "hit", "data-id": hit.id, "data-rank": hit.rank });
  if (hit.file_url) card.append(hitMedia(hit.file_url, state.schema.search.preview));
  card.append(element("figcaption", {}, [`#${hit.rank} `, element("span", { class: "score", text: `score ${hit.score.toFixed(4)}` })]));
  const list = element("dl");
  for (const [name, value] of Object.entries(hit.metadata)) {
    const shown = value === null ? "" : typeof value === "number" && !Number.isInteger(value) ? value.toFixed(4) : String(value);
    list.append(element("dt", { text: name }), element("dd", { text: shown.length > 200 ? `${shown.slice(0, 200)}…` : shown }));
  }
  card.append(list);
  return card;
}

function hitMedia(url, tag) {
  // tag: the element the indexed input's modality shows its files in (img, audio, video)
  const media = element(tag, { alt: tag === "img" ? "stored image" : null, loading: "lazy" });
  if (tag !== "img") media.controls = true;
  if (!state.schema.api_key_required) { media.src = url; return media; }
  // An <img> cannot send the X-API-Key header: fetch the file, then show it from a blob: URL.
  fetch(url, { headers: headers() })
    .then((response) => (response.ok ? response.blob() : Promise.reject(new Error(`${response.status}`))))
    .then((blob) => { media.src = URL.createObjectURL(blob); })
    .catch(() => media.replaceWith(element("p", { class: "muted", text: "(file not available)" })));
  return media;
}

function start() {
  const saved = sessionStorage.getItem("polymodal-api-key");
  if (saved) $("#api-key").value = saved;
  $("#api-key").addEventListener("change", loadSchema);
  $("#predict-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = await send("/v1/predict");
    if (body) showPrediction(body);
  });
  $("#generate-button").addEventListener("click", async () => {
    const body = await send("/v1/generate", samplingFields());
    if (body) showGenerated(body);
  });
  $("#explain-button").addEventListener("click", async () => {
    const body = await send("/v1/explain");
    if (body) showExplanation(body);
  });
  $("#predict-form").addEventListener("reset", () => {
    state.captured.clear();
    document.querySelectorAll(".preview").forEach((preview) => preview.replaceChildren());
  });
  $("#search-form").addEventListener("submit", runSearch);
  $("#search-text").addEventListener("input", () => {
    state.searchFile = null;
    $("#search-file").value = "";
    $("#search-preview").replaceChildren();
  });
  $("#search-file").addEventListener("change", () => {
    state.searchFile = null;
    $("#search-text").value = "";
    const file = $("#search-file").files[0];
    if (file) showPreview($("#search-preview"), { image: "img", audio: "audio", video: "video" }[queryKind(file)], file);
    else $("#search-preview").replaceChildren();
  });
  loadSchema();
}

start();
