// Small behaviours shared by all console pages (no inline scripts: the CSP allows only 'self').
(function () {
  "use strict";
  // Clear a create form once the server accepted it (errors come back retargeted to #flash).
  document.addEventListener("htmx:afterRequest", function (ev) {
    const form = ev.detail.elt;
    if (!form || !form.matches || !form.matches("form[data-reset-on-success]")) return;
    if (ev.detail.successful && !ev.detail.xhr.getResponseHeader("HX-Retarget")) form.reset();
  });
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
