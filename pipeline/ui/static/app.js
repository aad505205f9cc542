// tracelake UI: the little script the server-rendered pages use. Every page works without it
// (links and forms are plain); with it, a span opens without reloading the trace, offloaded values
// load on demand, and charts are drawn. Text from the lake is only ever put in with textContent or
// as HTML the server rendered (and escaped).
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // -- trace page: pick a span ----------------------------------------------------------------
  function selectSpan(row) {
    const wf = $("#waterfall");
    const pane = $("#span-pane");
    if (!wf || !pane) return;
    const trace = wf.dataset.trace;
    const span = row.dataset.span;
    $$(".wf-row.selected", wf).forEach((r) => r.classList.remove("selected"));
    row.classList.add("selected");
    pane.setAttribute("aria-busy", "true");
    const url = `/traces/${trace}/spans/${span}`;
    fetch(url, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : Promise.reject(new Error(`${r.status} ${r.statusText}`))))
      .then((html) => {
        pane.innerHTML = html; // rendered by the server's autoescaping templates
        pane.removeAttribute("aria-busy");
        history.replaceState(null, "", row.getAttribute("href"));
      })
      .catch((err) => {
        pane.removeAttribute("aria-busy");
        pane.textContent = `Could not load the span: ${err.message}`;
      });
  }

  document.addEventListener("click", (ev) => {
    const row = ev.target.closest(".wf-row");
    if (row && !ev.ctrlKey && !ev.metaKey && !ev.shiftKey && ev.button === 0) {
      ev.preventDefault();
      selectSpan(row);
      return;
    }
    const load = ev.target.closest(".load-artifact");
    if (load) {
      const out = load.nextElementSibling;
      load.disabled = true;
      fetch(`/artifacts/${load.dataset.ref}`, { credentials: "same-origin" })
        .then((r) => r.text().then((text) => (r.ok ? text : Promise.reject(new Error(text)))))
        .then((text) => {
          out.textContent = text;
          out.hidden = false;
          load.hidden = true;
        })
        .catch((err) => {
          out.textContent = `Could not load it: ${err.message}`;
          out.hidden = false;
          load.disabled = false;
        });
    }
  });

  // -- SQL console: Ctrl/Cmd+Enter runs ---------------------------------------------------------
  const sql = $("#sql");
  if (sql) {
    sql.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        sql.form.submit();
      }
    });
  }

  // -- charts (uPlot) ---------------------------------------------------------------------------
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"];

  function formatValue(unit, v) {
    if (v == null) return "–";
    switch (unit) {
      case "usd": return "$" + (Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3));
      case "ms": return v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(0) + " ms";
      case "percent": return v.toFixed(1) + "%";
      default: return Math.abs(v) >= 1e6 ? (v / 1e6).toFixed(1) + "M" : Math.abs(v) >= 1e4 ? (v / 1e3).toFixed(1) + "k" : String(Math.round(v * 100) / 100);
    }
  }

  function stack(series) {
    // cumulative sums so that bars of several series stack; nulls count as 0 below the next series
    const out = [];
    let acc = null;
    for (const values of series) {
      acc = values.map((v, i) => (acc ? acc[i] || 0 : 0) + (v || 0));
      out.push(acc);
    }
    return out;
  }

  function draw(el, spec) {
    const plot = $(".plot", el);
    if (!plot || !window.uPlot || !spec.x.length) return;
    const names = Object.keys(spec.series);
    const bars = spec.kind === "bars";
    const timeX = spec.x_kind === undefined || spec.x_kind === "time";
    const categories = spec.x_kind === "category" ? spec.x : null;
    const xs = categories ? spec.x.map((_, i) => i) : spec.x;
    let ys = names.map((n) => spec.series[n]);
    if (bars) ys = stack(ys).reverse();
    const order = bars ? names.slice().reverse() : names;
    const width = Math.max(280, plot.clientWidth || el.clientWidth || 480);
    const barPaths = window.uPlot.paths && window.uPlot.paths.bars ? window.uPlot.paths.bars({ size: [0.8, 64] }) : undefined;
    const opts = {
      width,
      tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1e3), "UTC"), // the lake and every page are in UTC
      height: 220,
      scales: {
        x: categories
          ? { time: false, range: (u, lo, hi) => [lo - 0.5, hi + 0.5] }
          : spec.step // a bucket's width of room on both sides: one bucket alone still has an axis
            ? { time: timeX, range: (u, lo, hi) => [lo - spec.step / 2, hi + spec.step / 2] }
            : { time: timeX },
        y: bars ? { range: (u, lo, hi) => [0, hi > 0 ? hi * 1.05 : 1] } : {},
      },
      axes: [
        categories ? { values: (u, splits) => splits.map((i) => (categories[i] == null ? "" : String(categories[i]).slice(0, 14))) } : {},
        { values: (u, splits) => splits.map((v) => formatValue(spec.unit, v)), size: 70 },
      ],
      series: [
        {},
        ...order.map((name, i) => {
          const color = PALETTE[(bars ? names.length - 1 - i : i) % PALETTE.length];
          return {
            label: name,
            stroke: color,
            fill: bars ? color : undefined,
            width: bars ? 0 : 2,
            paths: bars ? barPaths : undefined,
            points: { show: !bars && (xs.length < 40 || !!categories) },
            value: (u, v, si, di) => formatValue(spec.unit, di == null ? v : (spec.series[name] || [])[di]),
            spanGaps: false,
          };
        }),
      ],
      legend: { live: true },
    };
    plot.textContent = "";
    new window.uPlot(opts, [xs, ...ys], plot);
  }

  function drawAll() {
    const data = $("#chart-data");
    if (data) {
      const specs = JSON.parse(data.textContent);
      for (const spec of specs) {
        const el = document.getElementById(`chart-${spec.id}`);
        if (el) draw(el, spec);
      }
    }
    const sqlData = $("#sql-chart-data");
    const sqlChart = $('[data-chart="sql"]');
    if (sqlData && sqlChart) {
      const spec = JSON.parse(sqlData.textContent);
      const single = Object.keys(spec.series).length === 1;
      draw(sqlChart, { ...spec, unit: "count", kind: spec.x_kind === "category" && single ? "bars" : "line" });
    }
    document.body.dataset.chartsReady = "true";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawAll);
  else drawAll();
})();
