// Usage page: stacked bar chart of tokens per day per key, from the JSON embedded by the server.
(function () {
  "use strict";
  const COLORS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#1098ad", "#f08c00", "#c92a2a", "#5c940d"];
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const src = document.getElementById("usage-chart-data");
  const canvas = document.getElementById("usage-chart");
  if (!src || !canvas || typeof Chart === "undefined") return;
  const data = JSON.parse(src.textContent);
  // Each bar is labelled with its day of the month, with the month name on the first bar and on each
  // 1st ("Nov 2", "3", ..., "Dec 1"), so 30 days fit side by side on a desktop; Chart.js skips labels
  // only where they would overlap (a phone). The tooltip shows the full date.
  function dayLabel(iso, i) {
    const parts = String(iso).split("-");
    if (parts.length !== 3) return String(iso);
    const day = parseInt(parts[2], 10);
    return i === 0 || day === 1 ? MONTHS[parseInt(parts[1], 10) - 1] + " " + day : String(day);
  }
  const datasets = Object.keys(data.tokens).map(function (name, i) {
    return { label: name, data: data.tokens[name], backgroundColor: COLORS[i % COLORS.length], stack: "tokens" };
  });
  window.tesseraUsageChart = new Chart(canvas, {
    type: "bar",
    data: { labels: data.labels.map(dayLabel), datasets: datasets },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      scales: {
        x: { stacked: true, title: { display: true, text: "day (UTC)" },
             ticks: { autoSkip: true, maxRotation: 0, maxTicksLimit: 31 } },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "tokens" }, ticks: { precision: 0 } },
      },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 12 } },
        tooltip: { callbacks: { title: function (items) { return items.length ? data.labels[items[0].dataIndex] : ""; } } },
      },
    },
  });
})();
