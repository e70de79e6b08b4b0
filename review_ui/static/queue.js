// Queue page: j/k move the selection, Enter opens it, n claims the next clip.
"use strict";
(function () {
  const rows = Array.from(document.querySelectorAll("#queue-table tbody tr"));
  let selected = -1;
  function select(index) {
    if (!rows.length) return;
    selected = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach((row, i) => row.classList.toggle("selected", i === selected));
    const link = rows[selected].querySelector("a");
    if (link) link.focus();
  }
  merforgeKeys.on("j", () => select(selected + 1));
  merforgeKeys.on("k", () => select(selected - 1));
  merforgeKeys.on("Enter", () => {
    if (selected < 0) return false;
    window.location.assign(rows[selected].dataset.href);
  });
  merforgeKeys.on("n", () => document.getElementById("next-form").requestSubmit());
})();
