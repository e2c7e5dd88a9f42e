// minutesd review page: live queue (server-sent events), uploads, transcript time links.
"use strict";
const csrf = () => document.querySelector('meta[name="csrf"]').content;
const el = (id) => document.getElementById(id);
function esc(s) { const d = document.createElement("div"); d.textContent = s == null ? "" : String(s); return d.innerHTML; }

function list(id, items, row) {
  const ul = el(id); if (!ul) return;
  ul.innerHTML = items.length ? items.map(row).join("") : '<li class="none">none</li>';
}

function showQueue(q) {
  list("inbox", q.inbox, (f) => `<li>${esc(f.name)}</li>`);
  list("active", q.active, (j) => `<li data-key="${esc(j.key)}">${esc(j.name)}: ${esc(j.doing)}</li>`);
  list("failed", q.failed, (j) => `<li>${esc(j.name)} <span class="err">${esc(j.step)}: ${esc(j.error)}</span>` +
    (j.retry ? ` <form method="post" action="/retry/${esc(j.key)}" class="inline"><input type="hidden" name="csrf" value="${esc(csrf())}"><button>Retry</button></form>` : "") + "</li>");
  list("done", q.done, (j) => `<li><a href="/meeting/${esc(j.key)}">${esc(j.title || j.name)}</a></li>`);
  if (!q.active.length && el("stage") && !el("stage").dataset.live) el("stage").textContent = "Nothing running.";
}

window.minutesdSeen = [];  // event kinds this page received (the browser test reads it)
function live() {
  if (!el("queue") || !window.EventSource) return;
  const es = new EventSource("/events");
  ["queue", "step", "progress", "token", "step_end"].forEach((k) =>
    es.addEventListener(k, () => window.minutesdSeen.push(k)));
  es.addEventListener("queue", (e) => showQueue(JSON.parse(e.data)));
  es.addEventListener("step", (e) => {
    const d = JSON.parse(e.data);
    el("stage").textContent = `${d.name}: ${d.verb}`; el("stage").dataset.live = "1";
    const row = document.querySelector(`#active li[data-key="${CSS.escape(d.sha)}"]`);
    if (row) row.textContent = `${d.name}: ${d.verb}`;  // ahead of the next queue snapshot
    if (d.step === "minutes_written") el("tokens").textContent = "";
    el("progress").hidden = d.step !== "transcribed"; el("progress").value = 0;
  });
  es.addEventListener("progress", (e) => {
    const d = JSON.parse(e.data); el("progress").hidden = false; el("progress").value = d.percent;
  });
  es.addEventListener("token", (e) => { el("tokens").textContent += JSON.parse(e.data).text; });
  es.addEventListener("step_end", (e) => {
    const d = JSON.parse(e.data);
    if (!d.ok) el("stage").textContent += ` (failed: ${d.error})`;
    delete el("stage").dataset.live;
  });
}

function upload() {
  const form = el("upload"); if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = el("file").files[0]; const out = el("upload-result");
    if (!f) { out.textContent = "Choose a file first."; return; }
    out.textContent = `Uploading ${f.name}…`;
    try {
      const r = await fetch(`/upload?name=${encodeURIComponent(f.name)}`, {
        method: "POST", body: f, headers: { "X-CSRF-Token": csrf(), "Content-Type": "application/octet-stream" } });
      const d = await r.json();
      out.textContent = d.ok ? `${d.name} is in the inbox.` : `Not uploaded: ${d.error}`;
      out.className = d.ok ? "ok" : "err";
    } catch (e) { out.textContent = `Not uploaded: ${e}`; out.className = "err"; }
  });
}

function timeLinks() {
  const player = el("player"); if (!player) return;
  const seek = (t) => { player.currentTime = t; player.play().catch(() => {}); };
  document.querySelectorAll("a.t").forEach((a) => a.addEventListener("click", (ev) => {
    ev.preventDefault(); seek(parseFloat(a.dataset.t)); history.replaceState(null, "", a.getAttribute("href"));
  }));
  const m = location.hash.match(/^#t=([\d.]+)$/);
  if (m) player.addEventListener("loadedmetadata", () => seek(parseFloat(m[1])), { once: true });
}

document.addEventListener("DOMContentLoaded", () => { live(); upload(); timeLinks(); });
