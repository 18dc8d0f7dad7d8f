// Import patients: show the Open Dental account number choice only when that format is chosen.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const preset = document.getElementById("f-preset");
  const source = document.getElementById("source-field");
  if (!preset || !source) return;
  const show = () => { source.hidden = preset.value !== source.dataset.forPreset; };
  preset.addEventListener("change", show);
  show();
});
