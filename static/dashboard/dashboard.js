// SeedCore dashboard: glue between the live websocket frames and the page's htmx regions.
// Frames are swapped out of band by the htmx ws extension; this script only decides which
// regions to refresh, pauses while the tab is hidden, and keeps row selections across refreshes.
// Every frame is answered with "ack" once handled (or dropped while hidden): the server sends a
// page only a few frames ahead of its acks and merges the rest, so a stalled page costs it little.
(function () {
  "use strict";
  var socket = null;
  var missedWhileHidden = false;
  var selected = new Set();

  // Refresh a region now, or, if it refreshed less than its data-live-interval ago, once
  // more at the end of that interval: a burst costs one request per interval, and the last
  // change of a burst is never dropped (htmx's own throttle would drop it).
  function refresh(el) {
    if (document.hidden) {
      missedWhileHidden = true;  // caught up by the visibilitychange handler
      return;
    }
    var interval = parseInt(el.dataset.liveInterval || "500", 10);
    var wait = (el._liveLast || 0) + interval - Date.now();
    if (wait <= 0) {
      el._liveLast = Date.now();
      htmx.trigger(el, "live");
    } else if (!el._liveTimer) {
      el._liveTimer = setTimeout(function () {
        el._liveTimer = null;
        refresh(el);
      }, wait);
    }
  }

  function refreshAll() {
    document.querySelectorAll("[data-live],[data-live-task]").forEach(refresh);
  }

  function onTasksChanged(signal) {
    var ids = (signal.dataset.ids || "").split(" ").filter(Boolean);
    var overflow = signal.dataset.overflow === "1";
    document.querySelectorAll("[data-live~='tasks']").forEach(refresh);
    document.querySelectorAll("[data-live-task]").forEach(function (el) {
      if (overflow || ids.indexOf(el.dataset.liveTask) >= 0) refresh(el);
    });
  }

  function setIndicator(state, title) {
    var el = document.getElementById("live-indicator");
    if (!el) return;
    el.dataset.state = state;
    el.title = title;
    el.textContent = state === "on" ? "live" : state === "paused" ? "paused" : "offline";
  }

  document.addEventListener("htmx:wsOpen", function (e) {
    socket = e.detail.socketWrapper;
    setIndicator("on", "Live updates: connected");
    // Changes made between this page's render and the socket opening (or while it was
    // reconnecting) sent no frame to this page: catch up once.
    refreshAll();
  });
  document.addEventListener("htmx:wsClose", function () {
    socket = null;
    setIndicator("off", "Live updates: disconnected, reconnecting");
  });
  document.addEventListener("htmx:wsBeforeMessage", function (e) {
    if (document.hidden) {
      missedWhileHidden = true;
      e.preventDefault();  // no htmx:wsAfterMessage follows: acknowledge here
      e.detail.socketWrapper.send("ack");
    }
  });
  // A live refresh requested just before the tab was hidden may answer while it is hidden:
  // drop it and catch up when the tab is shown, so a hidden page never changes.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var elt = e.detail.elt;
    var live = elt && elt.matches && elt.matches("[data-live],[data-live-task]");
    if (document.hidden && live) {
      missedWhileHidden = true;
      e.detail.shouldSwap = false;
    }
  });
  document.addEventListener("htmx:wsAfterMessage", function (e) {
    try {
      if (e.detail.message.indexOf('id="live-tasks"') >= 0) {
        var signal = document.getElementById("live-tasks");
        if (signal) onTasksChanged(signal);
      }
    } finally {
      e.detail.socketWrapper.send("ack");  // even if handling failed: never stall the socket
    }
  });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      setIndicator("paused", "Live updates: paused while the tab is hidden");
      return;
    }
    if (socket) setIndicator("on", "Live updates: connected");
    if (missedWhileHidden) {
      missedWhileHidden = false;
      refreshAll();
      if (socket) socket.send("sync");
    }
  });

  // Row selection survives the live refreshes of the table body.
  function syncSelection() {
    document.querySelectorAll("input[name='ids']").forEach(function (box) {
      box.checked = selected.has(box.value);
    });
    var count = document.getElementById("selection-count");
    if (count) count.textContent = selected.size + " selected";
    document.querySelectorAll("[data-needs-selection]").forEach(function (button) {
      button.disabled = selected.size === 0;
    });
  }
  document.addEventListener("change", function (e) {
    var box = e.target;
    if (box.id === "select-all") {
      document.querySelectorAll("input[name='ids']").forEach(function (b) {
        if (box.checked) selected.add(b.value); else selected.delete(b.value);
      });
    } else if (box.name === "ids") {
      if (box.checked) selected.add(box.value); else selected.delete(box.value);
    } else {
      return;
    }
    syncSelection();
  });
  document.addEventListener("htmx:afterSwap", syncSelection);
  document.addEventListener("DOMContentLoaded", syncSelection);
  // Selected rows scrolled out by a refresh are still submitted.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.id !== "bulk-form") return;
    var present = new Set();
    form.querySelectorAll("input[name='ids']").forEach(function (b) { present.add(b.value); });
    selected.forEach(function (id) {
      if (present.has(id)) return;
      var hidden = document.createElement("input");
      hidden.type = "hidden"; hidden.name = "ids"; hidden.value = id;
      form.appendChild(hidden);
    });
  });

  // Confirmation for buttons that change many things or stop work.
  document.addEventListener("click", function (e) {
    var button = e.target.closest("[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) e.preventDefault();
  });
})();
