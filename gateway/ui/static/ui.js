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

  // Text as the name search compares it (gateway/formats/unicode_forms.py `folded`): in
  // either Unicode form, any case, without accents ("sao joao" finds "São João", typed
  // composed or stored decomposed).
  function folded(text) {
    return text.normalize("NFD").toUpperCase().toLowerCase().normalize("NFD")
      .replace(/\p{Mn}/gu, "").normalize("NFC");
  }

  document.querySelectorAll("input[data-filter]").forEach(function (input) {
    input.hidden = false;
    var rows = document.querySelectorAll(input.getAttribute("data-filter") + " tbody tr");
    input.addEventListener("input", function () {
      var needle = folded(input.value.trim());
      rows.forEach(function (row) {
        row.hidden = needle !== "" && folded(row.textContent).indexOf(needle) === -1;
      });
    });
  });

  // A form that changes things is sent once: a second click while its answer loads (a slow
  // server, a mobile link) would send it again, and the 409 "already sent" that answers it
  // replaces the first answer in the window (a new trigger's token, shown once, lost).
  // A page shown again from the back/forward cache may send its forms anew.
  document.querySelectorAll("form[method=post]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.hasAttribute("data-sent")) { event.preventDefault(); return; }
      form.setAttribute("data-sent", "");
    });
  });
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) { return; }
    document.querySelectorAll("form[data-sent]").forEach(function (form) {
      form.removeAttribute("data-sent");
    });
  });

  // A link back to the form a refused post came from (the 413 page) goes back in history when
  // that form's page is the one before: the browser keeps what was typed there (a pasted
  // mapping of 300 KB); loading it anew would show it empty. Without this, a fresh form.
  document.querySelectorAll("a[data-history-back]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      var before;
      try { before = new URL(document.referrer); } catch (error) { return; }
      var target = new URL(link.href);
      if (window.history.length < 2 || before.origin !== window.location.origin ||
          before.pathname !== target.pathname) { return; }
      event.preventDefault();
      window.history.back();
    });
  });

  document.querySelectorAll("button[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      if (!window.confirm(button.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
})();
