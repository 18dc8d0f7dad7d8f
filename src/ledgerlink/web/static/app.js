// ledgerlink dashboard: small progressive enhancements. Every page works without this file.
"use strict";

// [data-refresh-url]: replace the element with fresh HTML from that URL every few seconds, until the new
// element no longer carries data-refresh-url (the work it shows is done). Used for live progress.
function refreshLater(element) {
  const every = Number(element.dataset.refreshEvery || "1500");
  setTimeout(async () => {
    if (!document.body.contains(element)) return;
    try {
      const response = await fetch(element.dataset.refreshUrl, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (response.status === 401) { window.location.reload(); return; }
      if (!response.ok) { refreshLater(element); return; }
      const holder = document.createElement("div");
      holder.innerHTML = (await response.text()).trim();
      const fresh = holder.firstElementChild;
      if (!fresh) { refreshLater(element); return; }
      element.replaceWith(fresh);
      enhance(fresh);
      if (fresh.dataset.refreshUrl) refreshLater(fresh);
      else if (fresh.dataset.reloadWhenDone !== undefined) window.location.reload();
    } catch (error) {
      refreshLater(element);
    }
  }, every);
}

function enhance(root) {
  // A "select all" box: <input type=checkbox data-check-all="retry"> toggles every box named "retry".
  root.querySelectorAll("input[data-check-all]").forEach((box) => {
    box.addEventListener("change", () => {
      document.querySelectorAll(`input[type=checkbox][name="${box.dataset.checkAll}"]:not(:disabled)`)
        .forEach((other) => { other.checked = box.checked; });
    });
  });
  root.querySelectorAll("[data-print]").forEach((button) => {
    button.addEventListener("click", () => window.print());
  });
  root.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  // Submitting disables the form's buttons, so a double click does not post twice.
  root.querySelectorAll("form[method=post]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (event.defaultPrevented) return;
      setTimeout(() => form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; }), 0);
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  enhance(document);
  document.querySelectorAll("[data-refresh-url]").forEach(refreshLater);
});
