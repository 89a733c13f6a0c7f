// Twilio Chat panel: forms save through the JSON API, counters, and live updates.
// No inline scripts anywhere (the CSP forbids them); everything is wired from data attributes.
(function () {
  "use strict";

  let csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const statusBox = document.querySelector('[data-role="status"]');

  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, (_, key) => String(values[key] ?? ""));
  }

  function announce(text, kind) {
    if (!statusBox) return;
    statusBox.className = "app-status alert alert-" + (kind || "success") + " py-2";
    statusBox.textContent = text;
  }

  async function call(method, url, body) {
    const answer = await fetch(url, {
      method: method,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = null;
    try { data = await answer.json(); } catch (e) { data = null; }
    return { ok: answer.ok, status: answer.status, data: data };
  }

  // Read this session's CSRF token from a fresh copy of the page (a new login makes a new one).
  async function renewCsrf() {
    const answer = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (stateOf(answer) !== "ok" || !answer.ok) return false;
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const token = page.querySelector('meta[name="csrf-token"]')?.content;
    if (!token) return false;
    csrf = token;
    document.querySelectorAll('input[name="csrf_token"]').forEach((el) => { el.value = token; });
    return true;
  }

  async function api(method, url, body) {
    let result = await call(method, url, body);
    // Logged in again in another tab: this page's token is the old session's; take the new one.
    if (result.status === 403 && result.data?.error?.code === "csrf" && (await renewCsrf())) {
      result = await call(method, url, body);
    }
    if (result.status === 401) showBanner("session");
    else if (result.ok) showBanner(null); // it worked: whatever was lost is back
    return result;
  }

  // Forms with data-api: collect fields, post JSON, show errors next to their field. --------
  // Business hours: a time zone and the open days' times, as one object (or null: none).
  function collectHours(box) {
    const days = {};
    box.querySelectorAll("[data-hours-day]").forEach((row) => {
      if (!row.querySelector("[data-hours-open]").checked) return;
      days[row.dataset.hoursDay] = {
        start: row.querySelector("[data-hours-start]").value,
        end: row.querySelector("[data-hours-end]").value,
      };
    });
    const zone = box.querySelector("[data-hours-zone]").value.trim();
    return Object.keys(days).length || zone !== "UTC" ? { timezone: zone, days: days } : null;
  }

  document.querySelectorAll("[data-hours-day]").forEach((row) => {
    const open = row.querySelector("[data-hours-open]");
    const sync = () => row.querySelectorAll('input[type="time"]').forEach((el) => { el.disabled = !open.checked; });
    open.addEventListener("change", sync);
    sync();
  });

  function collect(form) {
    const data = {};
    form.querySelectorAll("[data-hours]").forEach((box) => { data[box.dataset.hours] = collectHours(box); });
    for (const el of form.elements) {
      if (!el.name || el.disabled) continue;
      if (el.type === "radio") {
        if (el.checked) data[el.name] = el.value;
      } else if (el.type === "checkbox") {
        if (el.hasAttribute("data-value")) {
          if (el.checked) data[el.name] = [el.value];
        } else {
          data[el.name] = el.checked;
        }
      } else if (el.hasAttribute("data-list")) {
        data[el.name] = el.value.split("\n").map((s) => s.trim()).filter(Boolean);
      } else if (el.type === "number") {
        data[el.name] = el.value === "" ? null : Number(el.value);
      } else if (el.hasAttribute("data-optional") && el.value === "") {
        continue; // e.g. the API key: empty means "keep it"
      } else {
        data[el.name] = el.value;
      }
    }
    return data;
  }

  function clearErrors(form) {
    form.querySelectorAll(".is-invalid").forEach((el) => el.classList.remove("is-invalid"));
    form.querySelectorAll("[data-error-for]").forEach((el) => { el.textContent = ""; el.classList.remove("d-block"); });
  }

  function showError(form, error) {
    const field = error && error.field;
    const input = field ? form.querySelector('[name="' + field + '"]') : null;
    const slot = field ? form.querySelector('[data-error-for="' + field + '"]') : null;
    if (input && slot) {
      input.classList.add("is-invalid");
      input.setAttribute("aria-describedby", slot.id || (slot.id = "err-" + field + "-" + Math.random().toString(36).slice(2)));
      slot.textContent = error.message;
      slot.classList.add("d-block");
      input.focus();
    }
    announce(error ? error.message : "Error", "danger");
  }

  document.querySelectorAll("form[data-api]").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      const button = form.querySelector('[type="submit"]');
      if (button) button.disabled = true;
      try {
        const result = await api("POST", form.dataset.api, collect(form));
        if (!result.ok) {
          showError(form, result.data && result.data.error ? result.data.error : { message: "HTTP " + result.status });
          return;
        }
        let text = form.dataset.success || "OK";
        if (form.dataset.show && result.data) text += " " + result.data[form.dataset.show];
        announce(text, "success");
        (form.dataset.reset || "").split(",").filter(Boolean).forEach((name) => {
          const el = form.querySelector('[name="' + name + '"]');
          if (el) { el.value = ""; el.dispatchEvent(new Event("input")); }
        });
        if (form.hasAttribute("data-reload")) setTimeout(() => window.location.reload(), 400);
        refresh();
      } catch (e) {
        announce(String(e), "danger");
      } finally {
        if (button) button.disabled = false;
      }
    });
  });

  // AI "Test connection": asks the model with the form's values, saved or not. ---------------
  document.querySelectorAll("[data-ai-test]").forEach((button) => {
    const form = button.closest("form");
    const out = form.querySelector('[data-role="ai-test-result"]');
    button.addEventListener("click", async () => {
      clearErrors(form);
      button.disabled = true;
      out.className = "small";
      out.textContent = button.dataset.testing;
      try {
        const values = collect(form);
        delete values.target_number; // not part of a connection
        const result = await api("POST", button.dataset.aiTest, values);
        if (result.ok) {
          out.className = "small text-success";
          out.textContent = format(button.dataset.answered, { answer: result.data.answer });
        } else {
          const error = result.data && result.data.error ? result.data.error : { message: "HTTP " + result.status };
          out.className = "small text-danger";
          out.textContent = error.message;
          if (error.field) showError(form, error);
        }
      } catch (e) {
        out.className = "small text-danger";
        out.textContent = String(e);
      } finally {
        button.disabled = false;
      }
    });
  });

  // Retry a failed message (its button is in the live thread, so listen on the document). --
  document.addEventListener("click", async (event) => {
    const button = event.target.closest && event.target.closest("[data-retry]");
    if (!button) return;
    button.disabled = true;
    try {
      const result = await api("POST", button.dataset.retry, {});
      if (result.ok) {
        announce(button.dataset.success, "success");
        refresh();
      } else {
        announce(result.data && result.data.error ? result.data.error.message : "HTTP " + result.status, "danger");
        button.disabled = false;
      }
    } catch (e) {
      announce(String(e), "danger");
      button.disabled = false;
    }
  });

  // The pause switch in a chat. ------------------------------------------------------------
  const pause = document.getElementById("pause-switch");
  if (pause) {
    pause.addEventListener("change", async () => {
      const url = pause.checked ? pause.dataset.pause : pause.dataset.resume;
      const result = await api("POST", url, {});
      if (result.ok) {
        announce(pause.checked ? pause.dataset.successOn : pause.dataset.successOff, "success");
        const shown = document.querySelector("[data-paused]");
        const until = result.data && result.data.replies_paused_until;
        if (shown) {
          shown.dataset.paused = until ? "yes" : "no";
          shown.replaceChildren();
          if (until) {
            const at = document.createElement("time");
            at.setAttribute("datetime", until);
            at.dataset.local = "time";
            shown.append(shown.dataset.label + " ", at);
            localize(shown);
          }
        }
      } else {
        pause.checked = !pause.checked;
        announce(result.data && result.data.error ? result.data.error.message : "HTTP " + result.status, "danger");
      }
    });
  }

  // Character and SMS segment counters (the same rules as segments.py). -------------------
  const GSM = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  const GSM_EXT = "^{}\\[~]|€\f";

  function segments(text) {
    let nonGsm = null;
    for (const ch of text) {
      if (!GSM.includes(ch) && !GSM_EXT.includes(ch)) { nonGsm = ch; break; }
    }
    let units, single, multi;
    if (nonGsm === null) {
      units = 0;
      for (const ch of text) units += GSM_EXT.includes(ch) ? 2 : 1;
      single = 160; multi = 153;
    } else {
      units = text.length; // UTF-16 code units
      single = 70; multi = 67;
    }
    const count = units === 0 ? 0 : units <= single ? 1 : Math.ceil(units / multi);
    return { chars: text.length, segments: count, per: units <= single ? single : multi, char: nonGsm };
  }

  document.querySelectorAll("[data-segments]").forEach((area) => {
    const out = document.getElementById(area.dataset.segments);
    const update = () => {
      const info = segments(area.value);
      out.textContent = format(info.char === null ? out.dataset.fmtGsm : out.dataset.fmtUcs, info);
      out.classList.toggle("text-warning-emphasis", info.char !== null);
    };
    area.addEventListener("input", update);
    update();
  });

  document.querySelectorAll("[data-count]").forEach((area) => {
    const out = document.getElementById(area.dataset.count);
    const update = () => {
      out.textContent = format(out.dataset.fmt, { chars: area.value.length, max: out.dataset.max });
      out.classList.toggle("text-danger", area.value.length > Number(out.dataset.max));
    };
    area.addEventListener("input", update);
    update();
  });

  // Times in the reader's own time zone and language. -------------------------------------
  // <time datetime data-local="relative|time">: "5 min ago" (then the date) or the clock (with
  // the date when not today); the full date, time and zone on hover.
  const lang = document.documentElement.lang || undefined;
  const full = new Intl.DateTimeFormat(lang, { dateStyle: "full", timeStyle: "full" });
  const clock = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" });
  const dated = new Intl.DateTimeFormat(lang, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const relative = new Intl.RelativeTimeFormat(lang, { numeric: "auto", style: "short" });

  function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  }

  function localize(root) {
    const now = new Date();
    (root || document).querySelectorAll("time[data-local]").forEach((el) => {
      const at = new Date(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      el.title = full.format(at);
      const seconds = Math.round((at - now) / 1000);
      if (el.dataset.local === "relative" && Math.abs(seconds) < 3600) {
        el.textContent = Math.abs(seconds) < 60 ? relative.format(0, "minute") : relative.format(Math.round(seconds / 60), "minute");
      } else if (el.dataset.local === "relative" && Math.abs(seconds) < 6 * 3600) {
        el.textContent = relative.format(Math.round(seconds / 3600), "hour");
      } else {
        el.textContent = sameDay(at, now) ? clock.format(at) : dated.format(at);
      }
    });
  }
  localize();
  setInterval(() => localize(), 60000);

  // Banners: the connection to the server, or the login session, is lost. ----------------
  function showBanner(kind) {
    document.querySelectorAll("[data-banner]").forEach((el) => { el.hidden = el.dataset.banner !== kind; });
    const again = document.querySelector('[data-role="login-again"]');
    if (again && kind === "session") {
      again.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    }
  }

  // What an answer says about the connection: "ok", "session" (logged out) or "offline" (a
  // server error, such as a proxy's 502 while the app restarts).
  function stateOf(answer) {
    if (answer.status === 401 || answer.status === 403) return "session";
    if (answer.type === "opaqueredirect") return "session"; // a page sent to the login form
    if (answer.redirected && new URL(answer.url).pathname === "/login") return "session";
    return answer.status >= 500 ? "offline" : "ok";
  }

  // A fetch that gives up after `ms`: a server that stops answering counts as lost.
  async function fetchWithin(url, ms, options) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), ms);
    try {
      return await fetch(url, { credentials: "same-origin", signal: abort.signal, ...options });
    } finally {
      clearTimeout(timer);
    }
  }

  // Live updates: short polls of the page's live part. -----------------------------------
  // The page asks its live part (data-live) with the cursor of the last answer; the server
  // answers at once: 204 when nothing the page shows is new, else the part's fresh HTML, and
  // the next cursor in X-Live-Cursor. A tab so holds a server thread only while a poll is
  // answered, and asking twice a second shows a new text within a second. Hidden tabs ask
  // less often, and a tab that lost the server backs off. Only the elements marked
  // data-live-target are replaced (from the data-live-part of the same name, or the whole
  // answer): no form is inside them, so a refresh never touches what someone is typing.
  const POLL_MS = 500;
  const HIDDEN_POLL_MS = 5000;
  const GIVE_UP_MS = 5000;
  const MAX_BACKOFF_MS = 5000;
  const main = document.getElementById("main");
  const liveUrl = main && main.dataset.live;
  const targets = Array.from(document.querySelectorAll("[data-live-target]"));
  let cursor = (main && main.dataset.cursor) || "";

  function show(html) {
    const fresh = document.createElement("template");
    fresh.innerHTML = html;
    for (const target of targets) {
      const name = target.dataset.liveTarget;
      const part = name ? fresh.content.querySelector('[data-live-part="' + name + '"]') : fresh.content;
      if (!part) continue;
      const atBottom = target.scrollTop + target.clientHeight >= target.scrollHeight - 20;
      const top = target.scrollTop;
      target.replaceChildren(...part.childNodes);
      // A chat follows new messages while its reader is at the bottom, and stays put otherwise.
      target.scrollTop = atBottom && target.classList.contains("chat") ? target.scrollHeight : top;
      localize(target);
    }
    // A person's reply pauses the conversation: the switch says so at once.
    const paused = document.querySelector("[data-paused]");
    const pauseSwitch = document.getElementById("pause-switch");
    if (paused && pauseSwitch) pauseSwitch.checked = paused.dataset.paused === "yes";
  }

  // Ask for the live part now; return "ok", "session" or "offline".
  async function refresh() {
    if (!liveUrl || !targets.length) return "ok";
    const url = liveUrl + (liveUrl.includes("?") ? "&" : "?") + "cursor=" + encodeURIComponent(cursor);
    try {
      const answer = await fetchWithin(url, GIVE_UP_MS, { headers: { Accept: "text/html" }, redirect: "manual" });
      const state = stateOf(answer);
      if (state !== "ok" || !answer.ok) return state; // e.g. a 404: the page is gone, keep it
      if (answer.status !== 204) show(await answer.text());
      const unread = answer.headers.get("X-Unread");
      if (unread !== null) document.title = (unread !== "0" ? "(" + unread + ") " : "") + document.title.replace(/^\(\d+\) /, "");
      cursor = answer.headers.get("X-Live-Cursor") || cursor;
      return "ok";
    } catch (e) {
      return "offline"; // no answer in time, or the connection failed
    }
  }

  let failures = 0;
  let timer = null;
  let polling = false;

  async function poll() {
    clearTimeout(timer);
    timer = null;
    polling = true;
    const state = await refresh();
    polling = false;
    failures = state === "ok" ? 0 : failures + 1;
    showBanner(state === "ok" ? null : state);
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    let wait = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
    if (failures) {
      // 1 s, 2 s, 4 s, then every 5 s, spread out so tabs do not all come back at once.
      wait = Math.min(1000 * 2 ** (failures - 1), MAX_BACKOFF_MS) * (0.75 + Math.random() / 4);
    }
    timer = setTimeout(poll, wait);
  }

  if (liveUrl && targets.length) {
    targets.filter((t) => t.classList.contains("chat")).forEach((t) => { t.scrollTop = t.scrollHeight; });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && !polling) poll(); // catch up at once when the tab is shown again
    });
    schedule();
  }
})();
