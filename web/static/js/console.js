// Small behaviours shared by all console pages (no inline scripts: the CSP allows only 'self').
(function () {
  "use strict";
  // Clear a create form once the server accepted it (errors come back retargeted to #flash).
  document.addEventListener("htmx:afterRequest", function (ev) {
    const form = ev.detail.elt;
    if (!form || !form.matches || !form.matches("form[data-reset-on-success]")) return;
    if (ev.detail.successful && !ev.detail.xhr.getResponseHeader("HX-Retarget")) form.reset();
  });
  // Deployment form: the context length input takes the selected model's maximum, so the browser
  // refuses an out-of-range value before the server does.
  document.addEventListener("change", function (ev) {
    const select = ev.target.closest && ev.target.closest("select[data-context-input]");
    if (!select) return;
    const input = document.getElementById(select.dataset.contextInput);
    const option = select.options[select.selectedIndex];
    if (!input || !option) return;
    const max = parseInt(option.dataset.maxContext || "", 10);
    const hint = document.getElementById(input.id + "-hint");
    if (max > 0) {
      input.max = String(max);
      input.placeholder = "model default (" + max.toLocaleString("en-US") + ")";
      if (hint) hint.textContent = "At most the model's maximum (" + max.toLocaleString("en-US") + "); empty uses it.";
    } else {
      input.removeAttribute("max");
      input.placeholder = "model default";
      if (hint) hint.textContent = "At most the model's maximum; empty uses it.";
    }
  });
  // Narrow screens: the nav collapses behind a "Menu" button (CSS shows the button below 760 px).
  document.addEventListener("click", function (ev) {
    const toggle = ev.target.closest("#nav-toggle");
    if (!toggle) return;
    const bar = document.getElementById("topbar");
    const open = bar.classList.toggle("nav-open");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
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
