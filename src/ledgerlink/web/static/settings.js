// Settings, keys and users: the "Copy the key" button on the page that shows a new key once.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("button[data-copy]").forEach((button) => {
    const field = document.getElementById(button.dataset.copy);
    const status = document.getElementById("copy-help");
    if (!field) return;
    button.hidden = false;
    button.addEventListener("click", async () => {
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch (error) {
        // No clipboard access (an old browser, a page not served over HTTPS): the key is selected instead.
        if (status) status.textContent = "Your browser did not allow copying: the key is selected, press Ctrl+C (⌘C on a Mac).";
      }
    });
  });
  document.querySelectorAll("input.secret[readonly]").forEach((field) => {
    field.addEventListener("focus", () => field.select());
  });
});
