// capgate's dashboard: plain DOM and SVG, no libraries. Every value from the server goes in as text
// (textContent, attributes), never as markup. Figures refresh by short polling of the admin API.
"use strict";

const API = "/admin/api/v1";
const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
let csrf = "";
let timer = null;
let generation = 0; // a view's refresh loop stops when another view starts

// ------------------------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-Capgate-CSRF"] = csrf;
  const response = await fetch(path.startsWith("/") ? path : `${API}/${path}`, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    if (response.status === 401 && path !== "/admin/session") showSignIn("Signed out: sign in again.");
    throw new HttpError(response.status, (data && data.error) || `HTTP ${response.status}`);
  }
  return data;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 10 ? `${value.toFixed(2)} s` : `${value.toFixed(1)} s`;
}

function when(stamp) {
  if (!stamp) return "–";
  const date = new Date(stamp * 1000);
  const ago = Math.round(Date.now() / 1000 - stamp);
  if (ago >= 0 && ago < 90) return `${ago} s ago`;
  if (ago >= 0 && ago < 5400) return `${Math.round(ago / 60)} min ago`;
  return date.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function pill(text, kind) { return el("span", { class: `pill ${kind || ""}`, text }); }

function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "empty", text: empty || "None." });
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map(h => el("th", { class: h.cls || (h.num ? "num" : null), text: h.label })))),
    el("tbody", {}, rows.map(cells => el("tr", {}, cells.map((cell, i) =>
      el("td", { class: headers[i].cls || (headers[i].num ? "num" : null) }, cell))))));
}

function card(title, body, wide) {
  return el("section", { class: wide ? "card wide" : "card" }, el("h2", { text: title }), body);
}

function meter(used, total) {
  const share = total > 0 ? Math.min(1, used / total) : 0;
  const box = el("span", { class: "meter" });
  box.append(svg("svg", { viewBox: "0 0 100 10", width: "80", height: "8", preserveAspectRatio: "none" },
    svg("rect", { x: 0, y: 0, width: Math.max(share * 100, share > 0 ? 3 : 0), height: 10,
                  fill: share >= 1 ? "#cf222e" : "#1f6feb" })));
  return el("span", {}, box, `${used} / ${total}`);
}

// A horizontal bar per item: [{label, value, text}].
function barChart(items, color) {
  if (!items.length) return el("p", { class: "empty", text: "Nothing to show yet." });
  const row = 24, labelW = 130, width = 520, max = Math.max(1, ...items.map(i => i.value));
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${items.length * row + 4}`, role: "img" });
  items.forEach((item, i) => {
    const y = i * row + 4;
    const w = Math.max(item.value > 0 ? 2 : 0, (item.value / max) * (width - labelW - 70));
    chart.append(svg("text", { x: 0, y: y + 14 }, item.label));
    chart.append(svg("rect", { x: labelW, y, width: w, height: row - 8, rx: 3, fill: item.color || color }));
    chart.append(svg("text", { x: labelW + w + 6, y: y + 14 }, item.text !== undefined ? item.text : item.value));
  });
  return chart;
}

// Stacked columns per minute: solved (green) under unsolvable (red).
function minuteChart(series) {
  const n = series.solved.length, width = 560, height = 150, pad = 22;
  const totals = series.solved.map((s, i) => s + series.unsolvable[i]);
  const max = Math.max(1, ...totals);
  const step = (width - pad) / n;
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height + 18}`, role: "img" });
  chart.append(svg("line", { x1: pad, y1: height, x2: width, y2: height, stroke: "#dde3ec" }));
  chart.append(svg("text", { x: 0, y: 10 }, String(max)));
  chart.append(svg("text", { x: 0, y: height }, "0"));
  for (let i = 0; i < n; i++) {
    const x = pad + i * step + 2, w = Math.max(step - 4, 1);
    const hs = (series.solved[i] / max) * (height - 6), hf = (series.unsolvable[i] / max) * (height - 6);
    chart.append(svg("rect", { x, y: height - hs, width: w, height: hs, fill: "#2da44e" }));
    chart.append(svg("rect", { x, y: height - hs - hf, width: w, height: hf, fill: "#cf222e" }));
  }
  const first = new Date(series.start * 1000), last = new Date((series.start + (n - 1) * series.step) * 1000);
  const hm = d => d.toISOString().slice(11, 16);
  chart.append(svg("text", { x: pad, y: height + 15 }, hm(first)));
  chart.append(svg("text", { x: width, y: height + 15, "text-anchor": "end" }, hm(last)));
  return el("div", {}, chart, el("div", { class: "legend" },
    el("span", {}, el("span", { class: "key solved" }), "solved"),
    el("span", {}, el("span", { class: "key failed" }), "unsolvable")));
}

// ------------------------------------------------------------------------------------ views

function view() { return document.getElementById("view"); }

function mount(...nodes) {
  const target = view();
  target.replaceChildren(...nodes);
}

function refreshing(render) {
  // Render now and every REFRESH_MS while this view is shown; errors show without stopping the loop.
  const mine = ++generation;
  clearTimeout(timer);
  const tick = async () => {
    if (mine !== generation) return;
    try { await render(); } catch (error) {
      if (mine === generation && !(error instanceof HttpError && error.status === 401)) {
        mount(el("p", { class: "error", text: `Could not load: ${error.message}` }));
      }
    }
    if (mine === generation && document.getElementById("signin").hidden) {
      timer = setTimeout(tick, REFRESH_MS);
    }
  };
  tick();
}

async function overviewView() {
  const data = await api("GET", "overview");
  const solvedMinute = data.methods.reduce((sum, m) => sum + m.solved_last_minute, 0);
  const online = data.workers.filter(w => w.online);
  const stats = el("div", { class: "stats" },
    [["Pending tasks", data.pending, "stat-pending"], ["Solved, last minute", solvedMinute, "stat-solved"],
     ["Workers online", online.length, "stat-workers"], ["Accounts", data.account_count, "stat-accounts"]]
      .map(([label, value, id]) => el("div", { class: "stat", id },
        el("span", { class: "value", text: value }), el("span", { class: "label", text: label }))));
  const queue = barChart(data.queue.map(q => ({ label: `${q.method} (${q.pool})`, value: q.depth })), "#1f6feb");
  const timing = table([{ label: "Method" }, { label: "Solved", num: true },
    { label: "Unsolvable", num: true, cls: "num hide-narrow" }, { label: "Per minute", num: true, cls: "num hide-narrow" },
    { label: "p50", num: true }, { label: "p95", num: true }],
    data.methods.map(m => [m.method, m.solved, m.unsolvable, m.solved_last_minute, seconds(m.p50), seconds(m.p95)]),
    "No task settled in the last 15 minutes.");
  const accuracy = barChart(data.profiles.filter(p => p.accuracy !== null).map(p => ({
    label: p.name, value: p.accuracy, text: `${Math.round(p.accuracy * 100)}% of ${p.reports_good + p.reports_bad}`,
    color: p.accuracy >= 0.9 ? "#2da44e" : p.accuracy >= 0.7 ? "#bf8700" : "#cf222e" })), "#2da44e");
  const workers = table([{ label: "Worker" }, { label: "Kind", cls: "hide-narrow" }, { label: "Serving" },
                         { label: "Last seen" }],
    online.map(w => [el("a", { href: `#/workers`, text: w.name }), w.human ? "person" : "program",
                     w.serving.join(", ") || "–", when(w.last_seen)]), "No worker claimed lately.");
  const accounts = table([{ label: "Account" }, { label: "Balance", num: true }, { label: "Threads" }],
    data.accounts.map(a => [el("a", { href: `#/accounts/${a.id}`, text: `${a.id} · ${a.key_prefix}…` }),
                            `$${a.balance}`, meter(a.working_threads, a.threads)]), "No accounts yet.");
  const failures = table([{ label: "Task" }, { label: "Method", cls: "hide-narrow" }, { label: "Code" },
                          { label: "When", cls: "hide-narrow" }],
    data.failures.map(f => [el("a", { href: `#/tasks/${f.id}`, text: f.id }), f.method, f.error || "–",
                            when(f.settled_at)]), "No failures in the last 15 minutes.");
  const bans = table([{ label: "Address" }, { label: "Until" }],
    data.bans.map(b => [b.address, when(b.until)]), "No address is banned.");
  mount(el("h1", {}, "Overview", el("span", { class: "updated", text: `updated ${new Date().toLocaleTimeString()}` })),
    stats,
    el("div", { class: "grid" },
      card(data.sampled ? "Solves per minute (newest tasks of the last 15 minutes)" : "Solves per minute (last 15 minutes)",
           minuteChart(data.series)),
      card("Queue depth by method", queue),
      card("Time to answer", timing),
      card("OCR accuracy by profile (customers' reports)", accuracy),
      card("Workers online", workers),
      card("Accounts (busiest first)", accounts),
      card("Recent failures", failures),
      card("Bans", bans)));
}

function topupForm(account, after) {
  const amount = el("input", { type: "text", inputmode: "decimal", placeholder: "USD", "aria-label": `Top up account ${account.id}`,
                               class: "topup-amount" });
  const status = el("span", { class: "error" });
  const submit = async (event) => {
    event.preventDefault();
    status.textContent = "";
    try {
      await api("POST", `accounts/${account.id}/topup`, { amount: amount.value.trim(), note: "dashboard topup" });
      amount.value = "";
      await after();
    } catch (error) { status.textContent = error.message; }
  };
  return el("form", { class: "inline", onsubmit: submit }, amount, el("button", { type: "submit", text: "Top up" }), status);
}

async function accountsView() {
  const data = await api("GET", "accounts");
  const focused = document.activeElement && document.activeElement.classList.contains("topup-amount");
  if (focused) return; // do not replace a form someone is typing in
  mount(el("h1", { text: "Accounts" }), card(`${data.accounts.length} accounts`,
    table([{ label: "Id" }, { label: "Key" }, { label: "Kind" }, { label: "Balance", num: true },
           { label: "Threads" }, { label: "State" }, { label: "Top up" }],
      data.accounts.map(a => [el("a", { href: `#/accounts/${a.id}`, text: a.id }), `${a.key_prefix}…`,
        a.sandbox ? "sandbox" : "live", el("span", { class: "balance", "data-account": a.id, text: `$${a.balance}` }),
        meter(a.working_threads, a.threads), a.disabled ? pill("disabled", "bad") : pill("active", "ok"),
        topupForm(a, accountsView)]), "No accounts yet: capgate keys create"), true));
}

async function accountView(id) {
  const focused = document.activeElement && document.activeElement.tagName === "INPUT";
  if (focused) return;
  const [{ account }, { entries }, { tasks }] = await Promise.all([
    api("GET", `accounts/${id}`), api("GET", `accounts/${id}/ledger?limit=50`),
    api("GET", `tasks?account=${id}&limit=20`)]);
  const threads = el("input", { type: "number", min: 1, value: account.threads, "aria-label": "Threads" });
  const setThreads = async (event) => {
    event.preventDefault();
    await api("PATCH", `accounts/${id}`, { threads: Number(threads.value) });
    await accountView(id);
  };
  const toggle = async () => {
    await api("PATCH", `accounts/${id}`, { disabled: !account.disabled });
    await accountView(id);
  };
  const facts = el("dl", { class: "facts" }, [
    ["Key", `${account.key_prefix}…`], ["Kind", account.sandbox ? "sandbox" : "live"],
    ["Balance", el("span", { class: "balance", "data-account": account.id, text: `$${account.balance}` })],
    ["Threads in use", meter(account.working_threads, account.threads)],
    ["State", account.disabled ? pill("disabled", "bad") : pill("active", "ok")],
    ["Created", when(account.created_at)],
    ["Settings", Object.entries(account.settings).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`).join(", ") || "none"],
  ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  mount(el("h1", { text: `Account ${account.id}` }),
    el("div", { class: "grid" },
      card("Account", el("div", {}, facts)),
      card("Change", el("div", { class: "grid" },
        topupForm(account, () => accountView(id)),
        el("form", { class: "inline", onsubmit: setThreads }, threads, el("button", { type: "submit", text: "Set threads" })),
        el("div", {}, el("button", { type: "button", class: account.disabled ? "secondary" : "danger", onclick: toggle,
                                     text: account.disabled ? "Enable" : "Disable (cancels its pending tasks)" })))),
      card("Ledger", table([{ label: "When" }, { label: "Kind" }, { label: "Amount", num: true },
        { label: "Balance after", num: true }, { label: "Task" }, { label: "Note" }],
        entries.map(e => [when(e.created_at), e.kind, e.amount, e.balance_after,
                          e.task_id ? el("a", { href: `#/tasks/${e.task_id}`, text: e.task_id }) : "–", e.note]),
        "No ledger entries."), true),
      card("Recent tasks", taskTable(tasks), true)));
}

function taskTable(tasks) {
  const kind = s => s === "solved" ? "ok" : s === "unsolvable" ? "bad" : s === "pending" ? "warn" : "";
  return table([{ label: "Task" }, { label: "Account" }, { label: "Method" }, { label: "State" },
                { label: "Created" }, { label: "Took", num: true }, { label: "Code", cls: "hide-narrow" }],
    tasks.map(t => [el("a", { href: `#/tasks/${t.id}`, text: t.id, class: "task-id" }),
                    el("a", { href: `#/accounts/${t.account_id}`, text: t.account_id }), t.method,
                    pill(t.state, kind(t.state)), when(t.created_at),
                    t.settled_at ? seconds(t.settled_at - t.created_at) : "–", t.error || "–"]),
    "No tasks match.");
}

async function workersView() {
  const { workers } = await api("GET", "workers");
  const toggle = (w) => async () => {
    await api("PATCH", `workers/${w.id}`, { disabled: !w.disabled });
    await workersView();
  };
  mount(el("h1", { text: "Workers" }), card(`${workers.length} worker tokens`,
    table([{ label: "Id" }, { label: "Name" }, { label: "Token" }, { label: "Kind" }, { label: "May serve" },
           { label: "Serving now" }, { label: "Last seen" }, { label: "State" }, { label: "" }],
      workers.map(w => [w.id, w.name, `${w.token_prefix}…`, w.human ? "person" : "program",
        w.methods.join(", ") || "any", w.serving.join(", ") || "–", when(w.last_seen),
        w.disabled ? pill("disabled", "bad") : w.online ? pill("online", "ok") : pill("idle"),
        el("button", { type: "button", class: w.disabled ? "secondary" : "danger", onclick: toggle(w),
                       text: w.disabled ? "Enable" : "Disable" })]),
      "No worker tokens: capgate workers create NAME"), true));
}

const taskFilters = { account: "", state: "", method: "" };

async function tasksView() {
  const query = new URLSearchParams({ limit: "50" });
  for (const [name, value] of Object.entries(taskFilters)) if (value) query.set(name, value);
  const { tasks } = await api("GET", `tasks?${query}`);
  if (document.activeElement && document.activeElement.closest && document.activeElement.closest(".filters")) return;
  const field = (name, input) => {
    input.value = taskFilters[name];
    input.addEventListener("change", () => { taskFilters[name] = input.value.trim(); tasksView(); });
    return el("label", {}, name, input);
  };
  const states = el("select", { name: "state" }, ["", "pending", "solved", "unsolvable", "expired"].map(
    s => el("option", { value: s, text: s || "any" })));
  mount(el("h1", { text: "Tasks" }),
    el("div", { class: "filters" }, field("account", el("input", { type: "text", inputmode: "numeric", size: 6 })),
       field("state", states), field("method", el("input", { type: "text", size: 10, placeholder: "normal" }))),
    card("Newest first", taskTable(tasks), true));
}

async function taskView(id) {
  const data = await api("GET", `tasks/${id}`);
  const t = data.task;
  const facts = el("dl", { class: "facts" }, [
    ["Account", el("a", { href: `#/accounts/${t.account_id}`, text: t.account_id })], ["Method", t.method],
    ["State", t.state], ["Pool", t.pool], ["Attempts", t.attempts], ["Code", t.error || "–"],
    ["Answer", t.answer ? JSON.stringify(t.answer) : "–"], ["Confidence", t.confidence ?? "–"],
    ["Report", t.report || "–"], ["Parameters", JSON.stringify(t.params)],
  ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  mount(el("h1", { text: `Task ${t.id}` }), el("div", { class: "grid" },
    card("Task", facts),
    card("History", table([{ label: "When" }, { label: "Event" }, { label: "Detail" }],
      data.history.map(e => [e.at ? when(e.at) : "–", e.event, e.detail])))));
}

function route() {
  const hash = location.hash || "#/";
  const parts = hash.slice(2).split("/");
  const name = parts[0] || "overview";
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  if (name === "accounts" && parts[1]) refreshing(() => accountView(parts[1]));
  else if (name === "accounts") refreshing(accountsView);
  else if (name === "workers") refreshing(workersView);
  else if (name === "tasks" && parts[1]) { generation++; clearTimeout(timer); taskView(parts[1]).catch(showError); }
  else if (name === "tasks") refreshing(tasksView);
  else refreshing(overviewView);
}

function showError(error) { mount(el("p", { class: "error", text: `Could not load: ${error.message}` })); }

// ------------------------------------------------------------------------------------ sign-in

function showSignIn(message) {
  generation++;
  clearTimeout(timer);
  csrf = "";
  document.getElementById("signin").hidden = false;
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("signin-error").textContent = message || "";
  view().replaceChildren();
}

function signedIn(session) {
  csrf = session.csrf || "";
  document.getElementById("signin").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  document.getElementById("who").textContent = session.name;
  route();
}

async function start() {
  document.getElementById("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    try {
      const session = await api("POST", "/admin/session", { token: input.value.trim() });
      input.value = "";
      signedIn(session);
    } catch (error) {
      document.getElementById("signin-error").textContent = error.message;
    }
  });
  document.getElementById("signout").addEventListener("click", async () => {
    try { await api("DELETE", "/admin/session"); } catch (_) { /* signed out either way */ }
    showSignIn("Signed out.");
  });
  window.addEventListener("hashchange", () => { if (csrf) route(); });
  try {
    const session = await api("GET", "/admin/session");
    if (session.signed_in) signedIn(session);
    else showSignIn("");
  } catch (error) {
    showSignIn(error.message);
  }
}

start();
