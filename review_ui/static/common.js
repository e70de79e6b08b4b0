// Shared by every page: the help overlay and a keyboard dispatcher that stays out of
// the way while the user types in a field. No data is ever inserted as HTML.
"use strict";
(function () {
  const help = document.getElementById("help");
  function toggleHelp(show) {
    if (!help) return;
    help.hidden = show === undefined ? !help.hidden : !show;
    if (!help.hidden) help.querySelector("button")?.focus();
  }
  document.querySelectorAll("[data-help-open]").forEach((b) => b.addEventListener("click", () => toggleHelp(true)));
  document.querySelectorAll("[data-help-close]").forEach((b) => b.addEventListener("click", () => toggleHelp(false)));

  function typing(target) {
    if (!target) return false;
    const tag = target.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT") return true;
    if (tag === "INPUT") {
      const type = (target.type || "").toLowerCase();
      return !["radio", "checkbox", "range", "button", "submit"].includes(type);
    }
    return target.isContentEditable;
  }

  const handlers = {};
  window.merforgeKeys = {
    on(key, fn) { handlers[key] = fn; },
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape") {
      if (help && !help.hidden) { toggleHelp(false); event.preventDefault(); return; }
      if (typing(event.target)) { event.target.blur(); event.preventDefault(); }
      return;
    }
    if (typing(event.target)) return;
    if (event.key === "?") { toggleHelp(); event.preventDefault(); return; }
    if (help && !help.hidden) return;
    const fn = handlers[event.key];
    if (fn) {
      if (fn(event) !== false) event.preventDefault();
    }
  });
})();
