// Behaviour for the portal's pages. No inline scripts: the Content-Security-Policy forbids them.
(function () {
  "use strict";

  // The language menu submits itself when changed.
  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-autosubmit]")) {
      event.target.form.submit();
    }
  });

  function progressParts(form) {
    var box = form.querySelector(".upload-progress");
    return box && {
      box: box,
      bar: box.querySelector("progress"),
      text: box.querySelector(".upload-progress-text"),
    };
  }

  function formatBytes(n) {
    var units = ["B", "KB", "MB", "GB", "TB"];
    var i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }

  // Upload progress comes from the browser's own XHR upload events, relayed by htmx.
  document.addEventListener("htmx:xhr:progress", function (event) {
    var form = event.target.closest("form[data-upload-progress]");
    if (!form || !event.detail.lengthComputable) { return; }
    var parts = progressParts(form);
    var percent = Math.floor((event.detail.loaded / event.detail.total) * 100);
    parts.box.hidden = false;
    parts.bar.value = percent;
    parts.text.textContent = percent + "% · " + formatBytes(event.detail.loaded) +
      " / " + formatBytes(event.detail.total);
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.target.closest("form[data-upload-progress]");
    if (!form) { return; }
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; }
    var parts = progressParts(form);
    parts.box.hidden = false;
  });

  document.addEventListener("htmx:sendError", function (event) {
    var form = event.target.closest("form[data-upload-progress]");
    if (!form) { return; }
    var parts = progressParts(form);
    parts.text.textContent = form.dataset.networkError || "Network error";
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = false; }
  });
})();
