// Small behaviours shared by all console pages (no inline scripts: the CSP allows only 'self').
(function () {
  "use strict";
  document.addEventListener("click", function (ev) {
    const btn = ev.target.closest("[data-copy-target]");
    if (!btn) return;
    const el = document.getElementById(btn.dataset.copyTarget);
    if (!el || !navigator.clipboard) return;
    navigator.clipboard.writeText(el.textContent.trim()).then(function () {
      btn.textContent = "Copied";
      window.setTimeout(function () { btn.textContent = "Copy"; }, 1500);
    });
  });
})();
