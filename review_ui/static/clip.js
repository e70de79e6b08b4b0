// Clip page: playback limited to the clip's range, the current word highlighted, a
// timeline (F0, intensity, AU estimates, speaker turns) with a playhead, evidence that
// seeks, and a keyboard shortcut for every action. Text from the server only ever goes
// through textContent / fillText, never innerHTML.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("clip-data").textContent);
  const player = document.getElementById("player");
  const form = document.getElementById("decision-form");
  const loadedAt = performance.now();
  const START = data.start, END = data.end;
  let submitted = false;

  // -- playback within [START, END] -------------------------------------------------
  function clampTime(t) { return Math.min(END, Math.max(START, t)); }
  function seek(t, play) {
    if (!player) return;
    player.currentTime = clampTime(t);
    if (play) player.play().catch(() => {});
  }
  function togglePlay() {
    if (!player) return;
    if (player.paused) {
      if (player.currentTime >= END - 0.05 || player.currentTime < START) player.currentTime = START;
      player.play().catch(() => {});
    } else {
      player.pause();
    }
  }
  if (player) {
    player.addEventListener("loadedmetadata", () => {
      if (player.currentTime < START || player.currentTime > END) player.currentTime = START;
    });
    player.addEventListener("timeupdate", stopAtEnd);
    player.addEventListener("play", () => requestAnimationFrame(frame));
    player.addEventListener("seeked", () => { highlight(); drawTimeline(); });
  }
  function stopAtEnd() {
    if (player.currentTime >= END) {
      player.pause();
      player.currentTime = END;
    }
  }
  function frame() {
    stopAtEnd();
    highlight();
    drawTimeline();
    if (!player.paused) requestAnimationFrame(frame);
  }

  // -- transcript -------------------------------------------------------------------
  const words = Array.from(document.querySelectorAll("#transcript .word")).map((el) => ({
    el, start: parseFloat(el.dataset.start), end: parseFloat(el.dataset.end),
  }));
  let current = null;
  function highlight() {
    if (!player) return;
    const t = player.currentTime;
    let found = null;
    for (const w of words) {
      if (w.start <= t && t < w.end) { found = w; break; }
      if (w.start > t) break;
    }
    if (found === current) return;
    if (current) current.el.classList.remove("current");
    if (found) found.el.classList.add("current");
    current = found;
  }
  words.forEach((w) => w.el.addEventListener("click", () => seek(w.start, true)));
  document.querySelectorAll("[data-seek]").forEach((el) =>
    el.addEventListener("click", () => seek(parseFloat(el.dataset.seek), true)));

  // -- timeline ---------------------------------------------------------------------
  const canvas = document.getElementById("timeline");
  const note = document.getElementById("timeline-note");
  let series = null;
  const LANES = [
    { key: "f0", title: "F0 (Hz)" },
    { key: "intensity", title: "intensity (dB)" },
    { key: "aus", title: "AU estimates (0–1)" },
    { key: "turns", title: "speakers" },
  ];
  const AU_COLOURS = ["#e4572e", "#17bebb", "#a259ff"];
  const SPEAKER_COLOURS = ["#2457c5", "#e08a00", "#1f7a3d", "#b42318", "#7a4cc2", "#0f8b8d", "#8a6d3b", "#c2185b"];

  function sizeCanvas() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(300, canvas.clientWidth);
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(canvas.clientHeight * ratio);
    drawTimeline();
  }
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function extent(values) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) if (v !== null && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (lo === Infinity) return null;
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    return [lo, hi];
  }
  function drawLine(ctx, times, values, x, top, height, range, colour) {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5 * (window.devicePixelRatio || 1);
    ctx.beginPath();
    let pen = false;
    for (let i = 0; i < times.length; i++) {
      const v = values[i];
      if (v === null || !Number.isFinite(v)) { pen = false; continue; }
      const px = x(times[i]), py = top + height - ((v - range[0]) / (range[1] - range[0])) * height;
      if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
      pen = true;
    }
    ctx.stroke();
  }
  function drawTimeline() {
    if (!canvas) return;
    const ctx = canvas.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.width, h = canvas.height;
    const left = 110 * ratio, right = w - 8 * ratio;
    const x = (t) => left + ((t - START) / Math.max(1e-6, END - START)) * (right - left);
    ctx.clearRect(0, 0, w, h);
    ctx.font = `${12 * ratio}px system-ui, sans-serif`;
    ctx.textBaseline = "middle";
    const laneHeight = h / LANES.length;
    const text = css("--text") || "#222", muted = css("--muted") || "#666", line = css("--line") || "#ccc";
    LANES.forEach((lane, i) => {
      const top = i * laneHeight + 4 * ratio, height = laneHeight - 8 * ratio;
      ctx.fillStyle = muted;
      ctx.fillText(lane.title, 4 * ratio, top + height / 2);
      ctx.strokeStyle = line;
      ctx.lineWidth = 1;
      ctx.strokeRect(left, top, right - left, height);
      if (lane.key === "turns") {
        const turns = data.turns || [];
        const names = Array.from(new Set(turns.map((t) => t.speaker)));
        turns.forEach((turn) => {
          const a = x(Math.max(START, turn.start)), b = x(Math.min(END, turn.end));
          if (b <= a) return;
          ctx.fillStyle = SPEAKER_COLOURS[names.indexOf(turn.speaker) % SPEAKER_COLOURS.length];
          ctx.fillRect(a, top + 2 * ratio, b - a, height - 4 * ratio);
          ctx.fillStyle = "#fff";
          if (b - a > 30 * ratio) ctx.fillText(turn.speaker, a + 4 * ratio, top + height / 2);
        });
        return;
      }
      if (!series) return;
      if (lane.key === "aus") {
        Object.keys(series.aus || {}).forEach((name, k) => {
          drawLine(ctx, series.time, series.aus[name], x, top, height, [0, 1], AU_COLOURS[k % AU_COLOURS.length]);
          ctx.fillStyle = AU_COLOURS[k % AU_COLOURS.length];
          ctx.fillText(name, right - (k + 1) * 44 * ratio, top + 8 * ratio);
        });
        return;
      }
      const values = series[lane.key] || [];
      const range = extent(values);
      if (!range) return;
      drawLine(ctx, series.time, values, x, top, height, range, text);
    });
    if (player) {
      const px = x(clampTime(player.currentTime || START));
      ctx.strokeStyle = css("--bad") || "#c00";
      ctx.lineWidth = 2 * ratio;
      ctx.beginPath(); ctx.moveTo(px, 0); ctx.lineTo(px, h); ctx.stroke();
    }
  }
  if (canvas) {
    canvas.addEventListener("click", (event) => {
      const rect = canvas.getBoundingClientRect();
      const left = 110, right = rect.width - 8;
      const fraction = (event.clientX - rect.left - left) / Math.max(1, right - left);
      if (fraction >= 0 && fraction <= 1) seek(START + fraction * (END - START), false);
    });
    window.addEventListener("resize", sizeCanvas);
    sizeCanvas();
    if (data.has_timeline) {
      fetch(data.timeline_url, { credentials: "same-origin" })
        .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`timeline: HTTP ${r.status}`))))
        .then((json) => { series = json; drawTimeline(); })
        .catch((error) => { note.textContent = String(error.message || error); });
    }
  }

  // -- decision form ----------------------------------------------------------------
  document.querySelectorAll("[data-enables]").forEach((box) => {
    const target = document.getElementById(box.dataset.enables);
    box.addEventListener("change", () => { target.disabled = !box.checked; });
  });
  document.querySelectorAll(".dims input[type=range]").forEach((range) => {
    const output = range.nextElementSibling;
    range.addEventListener("input", () => { output.textContent = Number(range.value).toFixed(2); });
  });
  const radios = Array.from(form.querySelectorAll("input[type=radio][name=label]"));
  form.addEventListener("submit", (event) => {
    const decision = event.submitter ? event.submitter.value : "";
    if (decision === "correct" && !radios.some((r) => r.checked)) {
      event.preventDefault();
      (radios[0] || form).focus();
      note.textContent = "";
      alertPick();
      return;
    }
    if (submitted) { event.preventDefault(); return; }
    submitted = true;
    document.getElementById("seconds-spent").value = ((performance.now() - loadedAt) / 1000).toFixed(1);
  });
  function alertPick() {
    let message = document.getElementById("pick-message");
    if (!message) {
      message = document.createElement("p");
      message.id = "pick-message";
      message.className = "flash error";
      message.setAttribute("role", "alert");
      form.prepend(message);
    }
    message.textContent = "Pick a label first (keys 1–9).";
  }
  function submitWith(key) {
    const button = form.querySelector(`button[data-key="${key}"]`);
    if (button) form.requestSubmit(button);
    return Boolean(button);
  }

  // -- keyboard ---------------------------------------------------------------------
  merforgeKeys.on(" ", () => togglePlay());
  merforgeKeys.on("ArrowLeft", () => seek((player ? player.currentTime : START) - 1, false));
  merforgeKeys.on("ArrowRight", () => seek((player ? player.currentTime : START) + 1, false));
  merforgeKeys.on("0", () => seek(START, false));
  for (let i = 1; i <= 9; i++) {
    merforgeKeys.on(String(i), () => {
      const radio = radios[i - 1];
      if (!radio) return false;
      radio.checked = true;
      radio.dispatchEvent(new Event("change", { bubbles: true }));
    });
  }
  ["a", "c", "r", "s"].forEach((key) => merforgeKeys.on(key, () => submitWith(key)));
  merforgeKeys.on("n", () => document.getElementById("next-form").requestSubmit());
  merforgeKeys.on("j", () => { const link = document.getElementById("next-link"); if (link) link.click(); });
  merforgeKeys.on("k", () => { const link = document.getElementById("prev-link"); if (link) link.click(); });
  merforgeKeys.on("m", () => document.getElementById("comment").focus());
})();
