// Live dashboard: loads the server's recent history (a ring buffer sampled every interval), then polls
// it for new samples and feeds Chart.js line charts.
(function () {
  "use strict";
  const COLORS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#1098ad", "#f08c00", "#c92a2a", "#5c940d"];
  const cfg = document.getElementById("dashboard-config");
  if (!cfg || typeof Chart === "undefined") return;
  const url = cfg.dataset.historyUrl;
  const interval = parseInt(cfg.dataset.intervalMs || "1500", 10);
  const MAX_POINTS = parseInt(cfg.dataset.maxPoints || "600", 10);
  let lastTs = null;
  const charts = {};

  function makeChart(id, opts) {
    const canvas = document.querySelector('canvas[data-chart="' + id + '"]');
    if (!canvas) return null;
    const chart = new Chart(canvas, {
      type: "line",
      data: { labels: [], datasets: [] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, normalized: true,
        interaction: { mode: "index", intersect: false },
        // Counts are drawn as straight segments: a curve would invent values between two samples.
        elements: { point: { radius: 0 }, line: { borderWidth: 2, tension: opts.integer || opts.straight ? 0 : 0.25 } },
        scales: {
          x: { ticks: { maxTicksLimit: 5, autoSkip: true, autoSkipPadding: 16, maxRotation: 0 } },
          // Counts (requests, errors) get whole-number ticks only.
          y: Object.assign({ beginAtZero: true }, opts.max !== undefined ? { max: opts.max } : {},
                           opts.integer ? { ticks: { precision: 0 } } : {}),
        },
        plugins: { legend: { display: true, position: "bottom", labels: { boxWidth: 12 } } },
      },
    });
    charts[id] = chart;
    return chart;
  }

  function dataset(chart, label, index) {
    let ds = chart.data.datasets.find(function (d) { return d.label === label; });
    if (!ds) {
      const color = COLORS[index % COLORS.length];
      ds = { label: label, data: new Array(chart.data.labels.length).fill(null), borderColor: color,
             backgroundColor: color + "33", fill: false };
      chart.data.datasets.push(ds);
    }
    return ds;
  }

  // Appends one sample: values maps series label -> number (or null for a gap).
  function push(id, label, values) {
    const chart = charts[id];
    if (!chart) return;
    // New series first (back-filled with gaps), then the label and one value per series, so every
    // dataset stays exactly as long as the label list.
    Object.keys(values).forEach(function (name, i) { dataset(chart, name, i); });
    chart.data.labels.push(label);
    chart.data.datasets.forEach(function (ds) {
      ds.data.push(Object.prototype.hasOwnProperty.call(values, ds.label) ? values[ds.label] : null);
    });
    if (chart.data.labels.length > MAX_POINTS) {
      chart.data.labels.shift();
      chart.data.datasets.forEach(function (ds) { ds.data.shift(); });
    }
  }

  function setText(id, text) { const el = document.getElementById(id); if (el) el.textContent = text; }
  function pct(x) { return x === null || x === undefined ? null : Math.round(x * 10000) / 100; }
  function fmt(x, unit) { return x === null || x === undefined ? "–" : x.toLocaleString("en-US") + unit; }
  // A percentage: two decimals below 1 % (a big KV pool at light load reads 0.04 %, not 0 %), one below 10 %.
  function fmtPct(x) {
    if (x === null || x === undefined) return "–";
    const v = x * 100;
    if (v === 0) return "0 %";
    if (v < 0.01) return "< 0.01 %";
    return (v < 1 ? v.toFixed(2) : v < 10 ? v.toFixed(1) : Math.round(v).toString()) + " %";
  }

  makeChart("gpu-util", { max: 100 });
  makeChart("gpu-mem", {});
  makeChart("gpu-temp", {});
  makeChart("gpu-power", {});
  makeChart("cache", { max: 100 });
  makeChart("reqs", { integer: true });
  makeChart("rate", { straight: true });
  makeChart("errors", { integer: true });
  makeChart("tps", {});
  makeChart("ttft", {});

  function render(m) {
    // 24-hour "11:06:45": short enough that the time axis labels never run into each other.
    const label = new Date(m.ts * 1000).toLocaleTimeString("en-GB", { hour12: false });
    const e = m.engine || {};
    const sup = m.supervisor || {};
    setText("model-name", e.model_name || sup.model_name || "");
    const state = document.getElementById("engine-state");
    if (state) {
      state.textContent = sup.state || "unknown";
      state.className = "badge " + ({ ready: "ok", failed: "bad" }[sup.state] || "warn");
    }
    setText("t-running", fmt(e.num_running_reqs, ""));
    setText("t-queued", fmt(e.num_queued_reqs, ""));
    setText("t-kv", fmtPct(e.token_usage));
    setText("t-kv-tokens", e.kv_total_tokens ? (e.kv_used_tokens || 0).toLocaleString("en-US") + " / " +
            e.kv_total_tokens.toLocaleString("en-US") + " tokens" : "");
    setText("t-hit", fmtPct(e.cache_hit_rate));
    const r = m.requests || {};
    setText("t-rate", r.per_s === null || r.per_s === undefined ? "–" : (Math.round(r.per_s * 100) / 100).toLocaleString("en-US"));
    setText("t-tps", fmt(e.gen_throughput === null || e.gen_throughput === undefined ? null :
            Math.round(e.gen_throughput * 10) / 10, ""));
    setText("t-ttft", fmt(e.ttft_median_s === null || e.ttft_median_s === undefined ? null :
            Math.round(e.ttft_median_s * 1000), " ms"));

    const gpu = m.gpu || { available: false, gpus: [] };
    const noGpu = document.getElementById("no-gpu");
    if (noGpu) noGpu.hidden = gpu.available;
    setText("no-gpu-reason", gpu.reason || "");
    document.querySelectorAll(".gpu-chart").forEach(function (el) { el.hidden = !gpu.available; });
    if (gpu.available) {
      const util = {}, mem = {}, temp = {}, power = {};
      gpu.gpus.forEach(function (g) {
        const name = "GPU " + g.index;
        util[name] = g.util_pct;
        mem[name] = g.mem_used_mib === null ? null : Math.round(g.mem_used_mib / 102.4) / 10;
        temp[name] = g.temp_c;
        power[name] = g.power_w;
      });
      push("gpu-util", label, util); push("gpu-mem", label, mem);
      push("gpu-temp", label, temp); push("gpu-power", label, power);
    }
    push("cache", label, { "KV usage": pct(e.token_usage), "cache hit rate": pct(e.cache_hit_rate) });
    push("reqs", label, { running: e.num_running_reqs, queued: e.num_queued_reqs });
    push("rate", label, { "requests/s": r.per_s === undefined ? null : r.per_s });
    push("errors", label, { errors: r.errors === undefined ? null : r.errors,
                            "429s": r.rate_limited === undefined ? null : r.rate_limited });
    push("tps", label, { "tokens/s": e.gen_throughput });
    push("ttft", label, { "TTFT median": e.ttft_median_s === null || e.ttft_median_s === undefined ? null :
                          Math.round(e.ttft_median_s * 1000) });
  }

  async function tick() {
    try {
      const q = lastTs === null ? "" : "?after=" + encodeURIComponent(lastTs);
      const resp = await fetch(url + q, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (resp.status === 401) { window.location.reload(); return; }
      if (resp.ok) {
        const body = await resp.json();
        body.samples.slice(-MAX_POINTS).forEach(render);
        if (body.samples.length) lastTs = body.samples[body.samples.length - 1].ts;
        Object.keys(charts).forEach(function (id) { charts[id].update("none"); });
      }
    } catch (err) {
      // Server restarting or unreachable: keep polling, the charts just show a gap.
    }
    window.setTimeout(tick, interval);
  }
  tick();
  window.tesseraCharts = charts;  // for the browser tests
})();
