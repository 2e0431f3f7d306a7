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

  // --- The upload page: a drop zone, and the archive sent in resumable chunks -------------

  var ROLES = [
    [/-tree\.tar\.(bz2|xz|lzma)$/, "tarball"],
    [/\.md5$/, "md5"],
    [/\.contents$/, "contents"],
  ];
  var kept = {};  // the chosen files, put back into the pickers after the form is re-rendered

  function fieldFor(name) {
    for (var i = 0; i < ROLES.length; i++) {
      if (ROLES[i][0].test(name)) { return ROLES[i][1]; }
    }
    return name.endsWith(".name") ? "name" : null;
  }

  function setFile(form, field, file) {
    var input = form.querySelector("input[type=file][name=" + field + "]") ||
      form.querySelector("#id_" + field);
    if (!input) { return; }
    var transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    kept[field] = file;
  }

  function entriesOf(item) {
    // A dropped folder: its files (one level, as the image builder writes them).
    return new Promise(function (resolve) {
      var entry = item.webkitGetAsEntry && item.webkitGetAsEntry();
      if (entry && entry.isDirectory) {
        entry.createReader().readEntries(function (entries) {
          Promise.all(entries.filter(function (e) { return e.isFile; }).map(function (e) {
            return new Promise(function (ok) { e.file(ok, function () { ok(null); }); });
          })).then(function (files) { resolve(files.filter(Boolean)); });
        }, function () { resolve([]); });
      } else {
        var file = item.getAsFile();
        resolve(file ? [file] : []);
      }
    });
  }

  function assignDropped(form, files) {
    var list = form.querySelector(".dropzone .dropped");
    list.textContent = "";
    files.forEach(function (file) {
      var field = fieldFor(file.name);
      var line = document.createElement("li");
      if (field === "name") {
        file.text().then(function (text) {
          form.querySelector("#id_name").value = text.split("\n")[0].trim();
        });
      } else if (field) {
        setFile(form, field, file);
      }
      line.textContent = file.name + " → " + (field ? labelOf(form, field) : form.dataset.unknownFile);
      list.appendChild(line);
    });
  }

  function labelOf(form, field) {
    var label = form.querySelector("label[for=id_" + field + "]");
    return label ? label.textContent.replace("*", "").trim() : field;
  }

  function setUpUploadForm(form) {
    var zone = form.querySelector("#upload-dropzone");
    if (!zone || zone.dataset.ready) { return; }
    zone.dataset.ready = "1";
    zone.hidden = false;
    // Files chosen before the form was re-rendered (a refusal) stay chosen.
    Object.keys(kept).forEach(function (field) { setFile(form, field, kept[field]); });
    form.addEventListener("change", function (event) {
      if (event.target.type === "file" && event.target.files.length) {
        kept[event.target.name] = event.target.files[0];
      }
    });
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("over");
      });
    });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("over");
      var items = Array.prototype.slice.call(event.dataTransfer.items || []);
      Promise.all(items.map(entriesOf)).then(function (lists) {
        assignDropped(form, [].concat.apply([], lists));
      });
    });
  }

  function percentText(share) {
    var lang = document.documentElement.lang || "es";
    return new Intl.NumberFormat(lang, { style: "percent" }).format(share);
  }

  function base64(bytes) {
    var text = "";
    for (var i = 0; i < bytes.length; i++) { text += String.fromCharCode(bytes[i]); }
    return btoa(text);
  }

  function hex(bytes) {
    return Array.prototype.map.call(bytes, function (b) {
      return ("0" + b.toString(16)).slice(-2);
    }).join("");
  }

  function sha256(buffer) {
    if (window.crypto && window.crypto.subtle) {
      return window.crypto.subtle.digest("SHA-256", buffer).then(function (d) {
        return new Uint8Array(d);
      });
    }
    return Promise.resolve(sha256Fallback(new Uint8Array(buffer)));
  }

  // SHA-256 (FIPS 180-4) for pages served on plain HTTP, where browsers hide crypto.subtle.
  var K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
  ];

  function sha256Fallback(data) {
    var h = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c,
      0x1f83d9ab, 0x5be0cd19];
    var length = data.length;
    var padded = new Uint8Array(((length + 9 + 63) >> 6) << 6);
    padded.set(data);
    padded[length] = 0x80;
    var view = new DataView(padded.buffer);
    view.setUint32(padded.length - 8, Math.floor(length / 0x20000000));
    view.setUint32(padded.length - 4, (length << 3) >>> 0);
    var w = new Uint32Array(64);
    for (var offset = 0; offset < padded.length; offset += 64) {
      for (var t = 0; t < 16; t++) { w[t] = view.getUint32(offset + t * 4); }
      for (t = 16; t < 64; t++) {
        var a15 = w[t - 15], a2 = w[t - 2];
        var s0 = ((a15 >>> 7) | (a15 << 25)) ^ ((a15 >>> 18) | (a15 << 14)) ^ (a15 >>> 3);
        var s1 = ((a2 >>> 17) | (a2 << 15)) ^ ((a2 >>> 19) | (a2 << 13)) ^ (a2 >>> 10);
        w[t] = (w[t - 16] + s0 + w[t - 7] + s1) >>> 0;
      }
      var v = h.slice();
      for (t = 0; t < 64; t++) {
        var e = v[4], a = v[0];
        var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        var ch = (e & v[5]) ^ (~e & v[6]);
        var t1 = (v[7] + S1 + ch + K[t] + w[t]) >>> 0;
        var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        var maj = (a & v[1]) ^ (a & v[2]) ^ (v[1] & v[2]);
        v = [(t1 + S0 + maj) >>> 0, a, v[1], v[2], (v[3] + t1) >>> 0, e, v[5], v[6]];
      }
      for (t = 0; t < 8; t++) { h[t] = (h[t] + v[t]) >>> 0; }
    }
    var out = new Uint8Array(32);
    var outView = new DataView(out.buffer);
    for (t = 0; t < 8; t++) { outView.setUint32(t * 4, h[t]); }
    return out;
  }
  window.portalSha256Fallback = function (text) {  // for the browser test of the fallback
    return hex(sha256Fallback(new TextEncoder().encode(text)));
  };

  function csrfToken(form) {
    var input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function request(method, url, form, body, headers) {
    headers = Object.assign({ "X-CSRFToken": csrfToken(form) }, headers || {});
    return fetch(url, { method: method, body: body, headers: headers, credentials: "same-origin" })
      .then(function (response) {
        if (response.redirected) {
          // Sent to the login page: the session ended (a logout in another tab).
          return { status: 401, data: { error: document.body.dataset.sessionEnded } };
        }
        return response.json().catch(function () { return {}; }).then(function (data) {
          return { status: response.status, data: data };
        });
      });
  }

  function wait(ms) { return new Promise(function (ok) { setTimeout(ok, ms); }); }

  // Sends `file` in chunks from where the portal stands; resolves with the finished upload.
  function sendChunked(form, file, show) {
    var chunkSize;
    var upload;
    return file.slice(0, 8 * 1024 * 1024).arrayBuffer().then(sha256).then(function (first) {
      return request("POST", form.dataset.chunkedStart, form, JSON.stringify({
        filename: file.name, size: file.size, first_chunk_sha256: hex(first),
      }), { "Content-Type": "application/json" });
    }).then(function (answer) {
      if (answer.status !== 200 && answer.status !== 201) { throw { refused: answer.data }; }
      upload = answer.data;
      chunkSize = upload.chunk_size;
      if (upload.received > 0 && !upload.complete) {
        show(upload.received, form.dataset.resuming.replace("{percent}",
          percentText(upload.received / file.size)));
      }
      return next(upload.received, 0);
    });

    function next(offset, failures) {
      if (offset >= file.size) { return Promise.resolve(upload); }
      var end = Math.min(offset + chunkSize, file.size);
      return file.slice(offset, end).arrayBuffer().then(function (buffer) {
        return sha256(buffer).then(function (digest) {
          return request("PUT", upload.url, form, buffer, {
            "Content-Range": "bytes " + offset + "-" + (end - 1) + "/" + file.size,
            "Content-Digest": "sha-256=:" + base64(digest) + ":",
          });
        });
      }).then(function (answer) {
        if (answer.status === 200) {
          upload = answer.data;
          show(upload.received);
          return next(upload.received, 0);
        }
        if (answer.status === 409 && typeof answer.data.offset === "number") {
          return next(answer.data.offset, failures);  // the portal holds more (or less)
        }
        if (answer.status === 409 && failures < 12) {
          // A request cut off on the way may still hold the upload for a while: wait.
          return wait(5000).then(function () { return next(offset, failures + 1); });
        }
        if (answer.status === 400 && failures < 3) {
          return next(offset, failures + 1);  // damaged or cut off on the way: send again
        }
        throw { refused: answer.data };
      }, function () {
        // The network, not the portal: a few tries, then say where it stopped.
        if (failures >= 4) { throw { lost: offset }; }
        return wait(500 * Math.pow(2, failures)).then(function () {
          return next(offset, failures + 1);
        });
      });
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-chunked-start]")) { return; }
    if (form.dataset.chunkedDone === "1") { form.dataset.chunkedDone = ""; return; }
    var input = form.querySelector("input[type=file][name=tarball]");
    var file = input && input.files[0];
    if (!file || !window.fetch || !file.slice) { return; }  // the one-request upload
    event.preventDefault();
    event.stopImmediatePropagation();
    var parts = progressParts(form);
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    parts.box.hidden = false;
    var note = null;
    function show(received, message) {
      if (message) { note = message; }
      parts.bar.value = Math.floor((received / file.size) * 100);
      parts.text.textContent = (note ? note + " · " : "") + form.dataset.sending + ": " +
        percentText(received / file.size) + " · " + formatBytes(received) + " / " +
        formatBytes(file.size);
    }
    show(0);
    sendChunked(form, file, show).then(function (upload) {
      form.querySelector("input[name=tarball_upload]").value = upload.id;
      parts.text.textContent = form.dataset.finishing;
      input.disabled = true;  // the archive is on the portal: only the small files go now
      form.dataset.chunkedDone = "1";
      htmx.trigger(form, "submit");
    }, function (problem) {
      button.disabled = false;
      if (problem && problem.lost !== undefined) {
        parts.text.textContent = form.dataset.chunkLost.replace("{percent}",
          percentText(problem.lost / file.size));
      } else {
        parts.text.textContent = (problem && problem.refused && problem.refused.error) ||
          form.dataset.networkError;
      }
      parts.text.setAttribute("role", "alert");
    });
  }, true);

  function setUpAll() {
    document.querySelectorAll("form[data-chunked-start]").forEach(setUpUploadForm);
  }
  document.addEventListener("DOMContentLoaded", setUpAll);
  document.addEventListener("htmx:afterSwap", setUpAll);
  if (document.readyState !== "loading") { setUpAll(); }
})();
