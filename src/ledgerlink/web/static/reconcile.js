// Reconciliation: a row queued for Retry follows the worker. While a row carries data-row-refresh-url it is
// replaced by the row that URL returns, every data-refresh-every ms, until the fresh row no longer carries
// it (posted, failed, not posted or cleared). A <template> parses the <tr>: a <div> would drop it.
"use strict";

function announce(text) {
  const live = document.getElementById("reconcile-live");
  if (live) live.textContent = text;
}

function followRow(row) {
  const every = Number(row.dataset.refreshEvery || "1500");
  setTimeout(async () => {
    if (!document.body.contains(row)) return;
    try {
      const response = await fetch(row.dataset.rowRefreshUrl, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (response.status === 401 || response.redirected) { window.location.reload(); return; }  // signed out
      if (!response.ok) { followRow(row); return; }
      const holder = document.createElement("template");
      holder.innerHTML = (await response.text()).trim();
      const fresh = holder.content.firstElementChild;
      if (!fresh || fresh.tagName !== "TR") { followRow(row); return; }
      const changed = fresh.dataset.status !== row.dataset.status;
      row.replaceWith(fresh);
      if (changed) {
        const status = fresh.querySelector(".status");
        announce(`${fresh.dataset.payment}: ${status ? status.textContent : fresh.dataset.status}`);
      }
      if (fresh.dataset.rowRefreshUrl) followRow(fresh);
    } catch (error) {
      followRow(row);
    }
  }, every);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("tr[data-row-refresh-url]").forEach(followRow);
});
