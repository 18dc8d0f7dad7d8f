// ledgerlink dashboard: small progressive enhancements. Every page works without this file.
"use strict";

// [data-refresh-url]: replace the element with fresh HTML from that URL every few seconds, until the new
// element no longer carries data-refresh-url (the work it shows is done). Used for live progress and for
// table rows that follow the worker (a <template> parses the fragment: a <div> would drop a <tr>). When
// the fresh element's data-announce differs from the old one's, it is read out by the page's
// [data-live] region (role=status), so a screen reader hears "ch_123: Posted".
function refreshLater(element) {
  const every = Number(element.dataset.refreshEvery || "1500");
  setTimeout(async () => {
    if (!document.body.contains(element)) return;
    try {
      const response = await fetch(element.dataset.refreshUrl, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (response.status === 401 || response.redirected) { window.location.reload(); return; }  // signed out
      if (!response.ok) { refreshLater(element); return; }
      const holder = document.createElement("template");
      holder.innerHTML = (await response.text()).trim();
      const fresh = holder.content.firstElementChild;
      if (!fresh || fresh.tagName !== element.tagName) { refreshLater(element); return; }
      const live = document.querySelector("[data-live]");
      if (live && fresh.dataset.announce && fresh.dataset.announce !== element.dataset.announce) {
        live.textContent = fresh.dataset.announce;
      }
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
