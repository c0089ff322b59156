// Live updates for the dashboard's pages, without a build step or any library.
// The server sends a "change" event (server-sent events, /api/events) when a page would show
// something else; this fetches the page again and swaps its <main data-live>. Without
// EventSource it polls every POLL_MS instead.
(function () {
  "use strict";
  var POLL_MS = 5000;
  var main = document.querySelector("main[data-live]");
  if (!main) { return; }
  var busy = false;

  function reload() {
    if (busy) { return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main[data-live]");
        if (fresh) {
          main.innerHTML = fresh.innerHTML;
          main.dataset.version = fresh.dataset.version;
        }
      })
      .catch(function () { /* the next event or poll tries again */ })
      .then(function () { busy = false; });
  }

  if (window.EventSource) {
    var source = new EventSource("/api/events");
    source.addEventListener("change", function (event) {
      if (event.data !== main.dataset.version) { reload(); }
    });
  } else {
    window.setInterval(reload, POLL_MS);
  }
})();
