// Draws each <div class="chart"> from the JSON beside it (<script id="ID-data">):
// {"x": [...], "series": [{"label": ..., "values": [...]}, ...]}, with uPlot (vendored).
(function () {
  const COLORS = ["#3559e0", "#e04f35", "#12a150", "#b54708", "#7a5af8", "#0e9384", "#c11574", "#667085"];
  function draw(el) {
    if (el.dataset.drawn) return;
    const src = document.getElementById(el.id + "-data");
    if (!src || typeof uPlot === "undefined") return;
    const d = JSON.parse(src.textContent);
    const time = el.dataset.x !== "cycle";
    const opts = {
      width: Math.max(el.clientWidth - 16, 300), height: 240,
      scales: { x: { time: time } },
      // A cycle axis counts whole cycles; a time axis is uPlot's own.
      axes: [time ? {} : { incrs: [1], values: (u, vals) => vals.map((v) => v.toFixed(0)) },
             { label: el.dataset.ylabel || "" }],
      series: [{ label: time ? "time" : "cycle" }].concat(d.series.map((s, i) => ({
        label: s.label, stroke: COLORS[i % COLORS.length], width: 2, points: { show: !time || d.x.length < 40 },
      }))),
    };
    new uPlot(opts, [d.x].concat(d.series.map((s) => s.values)), el);
    el.dataset.drawn = "1";
  }
  function drawAll() { document.querySelectorAll("div.chart").forEach(draw); }
  document.addEventListener("DOMContentLoaded", drawAll);
  // No inline handlers (the Content-Security-Policy allows scripts from this site only): a
  // form with data-confirm asks first ({to}: its "to" field, or "its parent" when empty), a
  // select with data-submit-on-change submits its form.
  document.addEventListener("submit", (e) => {
    const form = e.target, text = form.dataset && form.dataset.confirm;
    if (!text) return;
    const to = form.elements.to ? (form.elements.to.value || "its parent") : "";
    if (!window.confirm(text.replace("{to}", to))) e.preventDefault();
  });
  document.addEventListener("change", (e) => {
    if (e.target.matches && e.target.matches("select[data-submit-on-change]")) e.target.form.submit();
  });
  document.addEventListener("htmx:afterSettle", drawAll);
})();
