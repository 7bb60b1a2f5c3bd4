// The live progress page: polls the job's progress (or streams it with ?live=sse) and updates
// the grid in place; every cell keeps its element, only its status class changes.
"use strict";
(function () {
  const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];
  const FINISHED_JOB = ["completed", "failed", "cancelled"];
  const POLL_MS = 1000, IDLE_MS = 10000, RETRY_MS = 2000;
  const base = location.pathname.replace(/\/+$/, "");
  const jobspecId = decodeURIComponent(base.slice(base.lastIndexOf("/") + 1));
  const dataUrl = base + "/progress";
  const $ = (id) => document.getElementById(id);
  let etag = null;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function pct(x) { return (Math.round(x * 10) / 10).toString() + "%"; }

  function setState(text, lost) {
    const s = $("state");
    s.textContent = text;
    s.classList.toggle("lost", !!lost);
  }

  // The grid's structure (regions, models, questions) rebuilds only when it changes.
  let shape = null;

  function buildGrid(p) {
    const host = $("regions");
    host.replaceChildren();
    for (const region of p.regions) {
      const box = el("article", { class: "region", "data-region": region });
      const h = el("h2", {}, region + " ");
      h.append(el("small", { "data-tally": "region" }));
      box.append(h);
      const table = el("table", { class: "grid" });
      const head = el("tr");
      head.append(el("th", { scope: "col" }, "model \\ question"));
      for (const q of p.questions) head.append(el("th", { scope: "col", title: q }, q || "(none)"));
      table.append(head);
      for (const m of p.models) {
        const row = el("tr");
        row.append(el("th", { scope: "row" }, m));
        for (const q of p.questions) {
          const td = el("td");
          td.append(el("span", {
            class: "cell status-none", role: "img",
            "data-region": region, "data-model": m, "data-question": q,
          }));
          row.append(td);
        }
        table.append(row);
      }
      const scroll = el("div", { class: "scroll" });
      scroll.append(table);
      box.append(scroll);
      host.append(box);
    }
  }

  function tallyTable(id, tallies) {
    const table = $(id);
    table.replaceChildren();
    const head = el("tr");
    for (const [t, wide] of [["", false], ["done", false], ["% done", false],
                             ["% completed", true], ...STATUSES.map((s) => [s, true])]) {
      head.append(el("th", wide ? { scope: "col", class: "wide" } : { scope: "col" }, t));
    }
    table.append(head);
    for (const [name, t] of Object.entries(tallies)) {
      const row = el("tr", { "data-name": name });
      row.append(el("td", {}, name || "(none)"));
      row.append(el("td", {}, t.done + " / " + t.expected));
      row.append(el("td", {}, pct(t.percent_done)));
      row.append(el("td", { class: "wide" }, pct(t.percent_completed)));
      for (const s of STATUSES) row.append(el("td", { class: "wide" }, String(t.counts[s])));
      table.append(row);
    }
  }

  function render(p) {
    document.title = p.jobspec_id + " · " + pct(p.percent_done) + " done";
    $("job").textContent = p.jobspec_id;
    const status = p.job_status ? "job " + p.job_status + " · " : "";
    $("summary").textContent = status + p.done + " of " + p.expected + " done (" +
      pct(p.percent_done) + "), " + pct(p.percent_completed) + " completed";
    $("bar-done").style.width = Math.min(100, p.percent_done) + "%";
    const next = JSON.stringify([p.regions, p.models, p.questions]);
    if (next !== shape) { buildGrid(p); shape = next; }
    const seen = new Map();
    for (const g of p.grid) seen.set(g.region + "\u0000" + g.model_id + "\u0000" + g.question_id, g.status);
    for (const cell of document.querySelectorAll("#regions .cell")) {
      const key = cell.dataset.region + "\u0000" + cell.dataset.model + "\u0000" + cell.dataset.question;
      const s = seen.get(key) || "none";
      const cls = "cell status-" + s;
      if (cell.className !== cls) cell.className = cls;
      const label = cell.dataset.model + " × " + (cell.dataset.question || "(none)") + ": " +
        (s === "none" ? "not started" : s);
      cell.setAttribute("title", label);
      cell.setAttribute("aria-label", label);
    }
    for (const box of document.querySelectorAll("#regions .region")) {
      const t = p.by_region[box.dataset.region];
      box.querySelector("[data-tally]").textContent = t
        ? t.done + " / " + t.expected + " done (" + pct(t.percent_done) + ")" : "";
    }
    tallyTable("by-region", p.by_region);
    tallyTable("by-model", p.by_model);
    tallyTable("by-question", p.by_question);
    setState("updated " + new Date().toLocaleTimeString());
    return FINISHED_JOB.includes(p.job_status) && p.done >= p.expected;
  }

  async function poll() {
    let wait = POLL_MS;
    try {
      const response = await fetch(dataUrl, {
        headers: etag ? { "If-None-Match": etag } : {}, cache: "no-store",
      });
      if (response.status === 200) {
        etag = response.headers.get("ETag");
        if (render(await response.json())) wait = IDLE_MS;
      } else if (response.status === 304) {
        setState("updated " + new Date().toLocaleTimeString());
      } else {
        const body = await response.json().catch(() => ({}));
        setState((body.error || "HTTP " + response.status) + "; retrying", true);
        wait = RETRY_MS;
      }
    } catch (err) {
      setState("connection lost; retrying", true);
      wait = RETRY_MS;
    }
    setTimeout(poll, wait);
  }

  function stream() {
    const source = new EventSource(base + "/events");
    source.onmessage = (event) => render(JSON.parse(event.data));
    source.addEventListener("failure", (event) => {
      setState((JSON.parse(event.data).error || "error") + "; retrying", true);
    });
    source.onerror = () => setState("connection lost; retrying", true);
  }

  $("job").textContent = jobspecId;
  if (new URLSearchParams(location.search).get("live") === "sse" && window.EventSource) stream();
  else poll();
})();
