// Usage page: stacked bar chart of tokens per day per key, from the JSON embedded by the server.
(function () {
  "use strict";
  const COLORS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#1098ad", "#f08c00", "#c92a2a", "#5c940d"];
  const src = document.getElementById("usage-chart-data");
  const canvas = document.getElementById("usage-chart");
  if (!src || !canvas || typeof Chart === "undefined") return;
  const data = JSON.parse(src.textContent);
  const datasets = Object.keys(data.tokens).map(function (name, i) {
    return { label: name, data: data.tokens[name], backgroundColor: COLORS[i % COLORS.length], stack: "tokens" };
  });
  window.tesseraUsageChart = new Chart(canvas, {
    type: "bar",
    data: { labels: data.labels, datasets: datasets },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      scales: { x: { stacked: true, ticks: { maxTicksLimit: 12 } }, y: { stacked: true, beginAtZero: true } },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    },
  });
})();
