// Sotto app: the little the pages need a script for. Loaded from /assets
// (the CSP allows no inline script). Every page works without it; this adds
// live updates, notifications and the passphrase strength hint.
(function () {
  "use strict";

  var body = document.body;
  var state = body.getAttribute("data-state");

  // Newest message and the message box in view (like any messenger).
  function scrollMessages() {
    var box = document.querySelector(".composer") || document.getElementById("messages");
    if (box && !window.location.hash) {
      box.scrollIntoView({ block: "end" });
    }
  }

  // Reload the conversation and then the chat list (in that order: loading
  // the conversation marks it read, so its badge is gone from the list).
  // Only while the page is in view: every reload counts as use for the idle
  // lock, so a page in a background tab must not keep Sotto open just
  // because messages keep arriving; it catches up when shown again.
  var stale = false;
  function refresh() {
    if (!window.htmx) {
      return;
    }
    if (document.hidden) {
      stale = true;
      return;
    }
    stale = false;
    var msgs = document.getElementById("messages");
    var chat = msgs ? msgs.getAttribute("data-chat") : "";
    var first = msgs
      ? htmx.ajax("GET", msgs.getAttribute("data-refresh"), {
          target: "#messages",
          swap: "outerHTML",
        })
      : Promise.resolve();
    first.then(function () {
      if (msgs) {
        scrollMessages();
      }
      if (document.getElementById("chat-list")) {
        htmx.ajax("GET", "/fragments/chats", {
          target: "#chat-list",
          swap: "outerHTML",
          headers: { "X-Sotto-Chat": chat || "" },
        });
      }
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && stale) {
      refresh();
    }
  });

  function notify(text) {
    if (!text || !("Notification" in window)) {
      return;
    }
    if (Notification.permission === "granted" && document.hidden) {
      // A fixed tag: one notification at a time, never a pile of them.
      new Notification("Sotto", { body: text, tag: "sotto" });
    }
  }

  if ("EventSource" in window && state !== "erased" && state !== "stopped") {
    var events = new EventSource("/events");
    events.addEventListener("state", function (e) {
      if (e.data !== state) {
        // Locked, unlocked, erased or stopped elsewhere (or by the idle
        // lock): the server sends this page where it now belongs.
        events.close();
        window.location.assign(e.data === "erased" ? "/erased" : "/");
      }
    });
    events.addEventListener("message", function (e) {
      var data = {};
      try {
        data = JSON.parse(e.data);
      } catch (err) {
        data = {};
      }
      refresh();
      notify(data.notify);
    });
    // Group news (membership, refused changes): reload what is shown.
    events.addEventListener("notice", function () {
      refresh();
    });
  }

  // Settings: ask for notification permission only when the person clicks.
  var allow = document.getElementById("allow-notifications");
  var shown = document.getElementById("notification-state");
  if (allow && "Notification" in window) {
    var describe = function () {
      if (Notification.permission === "granted") {
        shown.textContent = "Notifications are allowed.";
        allow.hidden = true;
      } else if (Notification.permission === "denied") {
        shown.textContent = "This browser blocks notifications from Sotto; change it in the browser's site settings.";
        allow.hidden = true;
      } else {
        shown.textContent = "";
        allow.hidden = false;
      }
    };
    allow.addEventListener("click", function () {
      Notification.requestPermission().then(describe);
    });
    describe();
  }

  // Set-up: a rough strength estimate while typing (the server checks the
  // rule itself; this only helps choose).
  var pass = document.getElementById("passphrase");
  var strength = document.getElementById("strength");
  if (pass && strength && state === "none") {
    pass.addEventListener("input", function () {
      var p = pass.value;
      var classes = 0;
      [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/].forEach(function (re) {
        if (re.test(p)) {
          classes += 1;
        }
      });
      var words = p.trim().split(/\s+/).filter(function (w) {
        return w.length >= 3;
      }).length;
      // Bits, very roughly: per character by the alphabet in use, or per
      // word for a passphrase of several words.
      var alphabet = [0, 26, 36, 62, 94][classes];
      var bits = Math.max(p.length * Math.log2(alphabet || 1) * 0.6, words * 11);
      var text;
      if (p.length < 8) {
        text = "Too short: at least 8 characters.";
      } else if (bits < 40) {
        text = "Weak: add more words.";
      } else if (bits < 60) {
        text = "Fair: one or two more words would make it strong.";
      } else {
        text = "Strong.";
      }
      strength.textContent = text;
    });
  }

  // A message of mine still queued: look again now and then, so "Queued"
  // turns into "Sent" by itself once the relay has it (these reloads do not
  // count as use for the idle lock).
  window.setInterval(function () {
    if (document.querySelector("#messages .status.pending")) {
      refresh();
    }
  }, 10000);

  scrollMessages();
})();
