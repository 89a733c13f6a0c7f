// Twilio Chat panel: forms save through the JSON API, counters, and live updates.
// No inline scripts anywhere (the CSP forbids them); everything is wired from data attributes.
(function () {
  "use strict";

  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const statusBox = document.querySelector('[data-role="status"]');

  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, (_, key) => String(values[key] ?? ""));
  }

  function announce(text, kind) {
    if (!statusBox) return;
    statusBox.className = "app-status alert alert-" + (kind || "success") + " py-2";
    statusBox.textContent = text;
  }

  async function api(method, url, body) {
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

  // Forms with data-api: collect fields, post JSON, show errors next to their field. --------
  function collect(form) {
    const data = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled) continue;
      if (el.type === "checkbox") {
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

  // The pause switch in a chat. ------------------------------------------------------------
  const pause = document.getElementById("pause-switch");
  if (pause) {
    pause.addEventListener("change", async () => {
      const url = pause.checked ? pause.dataset.pause : pause.dataset.resume;
      const result = await api("POST", url, {});
      if (result.ok) {
        announce(pause.checked ? pause.dataset.successOn : pause.dataset.successOff, "success");
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

  // Live updates: long polling on /api/events, then re-render the page's live part. -------
  const main = document.getElementById("main");
  const liveUrl = main && main.dataset.live;
  const target = document.querySelector("[data-live-target]");

  async function refresh() {
    if (!liveUrl || !target) return;
    const answer = await fetch(liveUrl, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!answer.ok) return;
    const atBottom = target.scrollTop + target.clientHeight >= target.scrollHeight - 20;
    target.innerHTML = await answer.text();
    if (atBottom || target.classList.contains("chat")) target.scrollTop = target.scrollHeight;
  }

  async function poll() {
    let cursor = main.dataset.cursor || "";
    for (;;) {
      try {
        const answer = await fetch("/api/events?timeout=20&cursor=" + encodeURIComponent(cursor), {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (answer.status === 401) return;
        if (!answer.ok) throw new Error("HTTP " + answer.status);
        const data = await answer.json();
        if (data.cursor !== cursor) {
          cursor = data.cursor;
          if (data.messages.length) await refresh();
        }
      } catch (e) {
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  if (liveUrl && target) {
    if (target.classList.contains("chat")) target.scrollTop = target.scrollHeight;
    poll();
  }
})();
