// Rabbot admin UI: optional help only. Every page works without this file (forms post and
// redirect); it adds copy buttons, live filters on tables and confirmations. No inline
// scripts anywhere: behaviour hangs on data- attributes.
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    document.body.removeChild(area);
    return Promise.resolve();
  }

  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;  // without JavaScript there is nothing to click: the text is selectable
    var label = button.textContent;
    button.addEventListener("click", function () {
      var source = document.querySelector(button.getAttribute("data-copy"));
      if (!source) { return; }
      copyText(source.textContent.trim()).then(function () {
        button.textContent = button.getAttribute("data-copied");
        button.classList.add("done");
        setTimeout(function () { button.textContent = label; button.classList.remove("done"); }, 2000);
      });
    });
  });

  document.querySelectorAll("input[data-filter]").forEach(function (input) {
    input.hidden = false;
    var rows = document.querySelectorAll(input.getAttribute("data-filter") + " tbody tr");
    input.addEventListener("input", function () {
      var needle = input.value.trim().toLowerCase();
      rows.forEach(function (row) {
        row.hidden = needle !== "" && row.textContent.toLowerCase().indexOf(needle) === -1;
      });
    });
  });

  document.querySelectorAll("button[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      if (!window.confirm(button.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
})();
